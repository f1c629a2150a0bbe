"""Span-level recall and precision of PII detection (bench/pii_eval.py, tests/tuneline/test_pii_eval.py).

    s = score(gold, found)      # gold, found: per text, [(start, end, entity_type), ...]
    s["recall"]["PERSON"], s["precision"]["ALL"]

Recall, per gold entity type: a gold span counts as removed only when the detected spans (of any
type: what matters is that the value leaves the text) cover every one of its word characters, so
a partial leak (the surname left, the house number left) is a miss.
Precision, per detected type: a detected span is right when it overlaps a gold span; otherwise
it replaced text that is not personal data (over-anonymization).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

Span = tuple[int, int, str]
_WORD = re.compile(r"\w")


def covered(text: str, span: Span, found: Sequence[Span]) -> bool:
    """Whether every word character of `span` lies inside some detected span."""
    start, end, _ = span
    for i in range(start, end):
        if _WORD.match(text[i]) and not any(s <= i < e for s, e, _ in found):
            return False
    return True


def score(texts: Sequence[str], gold: Sequence[Sequence[Span]], found: Sequence[Sequence[Span]]) -> dict:
    """recall/precision per type and "ALL", with the counts they come from (see module doc)."""
    hit, total = Counter(), Counter()
    right, predicted = Counter(), Counter()
    for text, g, f in zip(texts, gold, found, strict=True):
        for span in g:
            total[span[2]] += 1
            hit[span[2]] += covered(text, span, f)
        for s, e, t in f:
            predicted[t] += 1
            right[t] += any(s < ge and gs < e for gs, ge, _ in g)
    recall = {t: hit[t] / total[t] for t in sorted(total)}
    recall["ALL"] = sum(hit.values()) / max(1, sum(total.values()))
    precision = {t: right[t] / predicted[t] for t in sorted(predicted)}
    precision["ALL"] = sum(right.values()) / max(1, sum(predicted.values())) if predicted else 1.0
    return {"recall": recall, "precision": precision,
            "gold": dict(sorted(total.items())), "removed": dict(sorted(hit.items())),
            "detected": dict(sorted(predicted.items())), "detected_right": dict(sorted(right.items()))}


BITEXT_PII = {"person_name": "PERSON", "order_id": "ORDER_ID", "invoice_id": "INVOICE_ID", "delivery_city": "LOCATION"}
"""bitext annotation types that are personal data (account_type, refund_amount, delivery_country are not)."""


def bitext_gold(frame) -> tuple[list[str], list[list[Span]]]:
    """(instruction texts, gold spans) from the bitext sample's entity_type/start_offset/end_offset.

    Rows annotated with a non-personal type keep their text with no gold span (precision counts there)."""
    texts, gold = [], []
    for text, etype, start, end in zip(frame["instruction"], frame["entity_type"], frame["start_offset"],
                                       frame["end_offset"]):
        text = str(text)
        spans = []
        if isinstance(etype, str) and etype in BITEXT_PII and start == start and end == end and end > start:
            start, end = max(0, int(start)), min(len(text), int(end))
            title = re.match(r"(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+", text[start:end])  # "Mr. Smith": the title is no PII
            spans.append((start + (title.end() if title else 0), end, BITEXT_PII[etype]))
        texts.append(text)
        gold.append(spans)
    return texts, gold
