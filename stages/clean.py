"""Normalize the collected texts, anonymize personal data (presidio) and drop unusable rows.

Reads: data/collected/records.parquet
Writes: data/clean/records.parquet (id, text, label, source, row, pii_replaced, pii_count),
        data/rejects/clean.parquet (rows dropped, each with a `reason`),
        reports/metrics/clean.json
Params: classification, paths, clean      Run: dvc repro clean   (or: python -m stages.clean)

Per row, in order: Unicode normalization (clean.normalization), markup and control characters
stripped, whitespace folded (tuneline.data.text.clean_text); rows without text, with a label outside
classification.labels, or outside clean.min_chars..max_chars are rejected; the rest are anonymized with
presidio (tuneline.data.pii.fast.anonymize_batch: clean.pii_entities, pii_score_threshold, pii_operator;
tuneline's recognizers with clean.id_patterns: tuneline.data.pii.recognizers)
and the length bounds are checked again on the anonymized text. Ids stay those of collect, so a
clean record traces back to its raw row. clean.json holds rows_in = rows_out + rows_rejected,
the reasons, and how many entities of each type were replaced: counts only, never the values.
Rejected rows keep their text as collected (like data/collected, they are not anonymized).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tuneline.data.pii import fast
from tuneline.errors import UserError, run_main
from tuneline.logs import setup_logging
from tuneline.params import ClassificationParams, CleanParams, Paths, load_params
from tuneline.tasks.labels import LabelSet
from tuneline.data.records import RECORD_COLUMNS, read_parquet, rejects_frame, write_json, write_parquet
from tuneline.data.text import clean_text

log = logging.getLogger("tuneline.clean")
STAGE = "clean"


class CleanError(UserError, ValueError):
    """The input or the settings cannot be cleaned at all: says what, where and the fix."""


def prepare(df: pd.DataFrame, p: CleanParams, allowed: LabelSet) -> tuple[pd.Series, pd.Series]:
    """Cleaned text and a reject reason per row ("" = keep), before anonymization."""
    texts, reasons = [], []
    for raw, label in zip(df["text"], df["label"]):
        if raw is None or (isinstance(raw, float) and pd.isna(raw)):
            texts.append("")
            reasons.append("missing_text")
            continue
        text = clean_text(str(raw), p.normalization, p.strip_markup)
        texts.append(text)
        if label not in allowed:
            reasons.append(f"label_not_allowed: {allowed.not_allowed(label)}")
        else:
            reasons.append(_length_reason(text, p))
    return pd.Series(texts, index=df.index, dtype=object), pd.Series(reasons, index=df.index, dtype=object)


def _length_reason(text: str, p: CleanParams, after: str = "") -> str:
    if not text:
        return "empty" + after
    if len(text) < p.min_chars:
        return f"too_short{after}: {len(text)} < clean.min_chars={p.min_chars}"
    if len(text) > p.max_chars:
        return f"too_long{after}: {len(text)} > clean.max_chars={p.max_chars}"
    return ""


def run(p: CleanParams, task: ClassificationParams, paths: Paths) -> dict:
    src = Path(paths.collected) / "records.parquet"
    df = read_parquet(src)
    missing = [c for c in RECORD_COLUMNS if c not in df.columns]
    if missing:
        raise CleanError(f"{src}: missing column(s) {missing}; columns are {list(df.columns)}. "
                         f"It should be written by the collect stage: run `dvc repro collect`.")
    df = df[RECORD_COLUMNS].reset_index(drop=True)
    started = time.perf_counter()
    texts, reasons = prepare(df, p, LabelSet.of(task))
    keep = reasons == ""
    rows_changed = int(sum(t != r for t, r, k in zip(texts, df["text"], keep) if k))

    results: list[fast.Anonymized] = []
    anon_seconds = 0.0
    if p.pii_entities and keep.any():
        anonymize = fast.clean_anonymizer(p)
        anon_started = time.perf_counter()
        with tqdm(total=int(keep.sum()), desc="clean: anonymize", unit="text", mininterval=1.0) as bar:
            results = anonymize(texts[keep].tolist(), progress=bar.update)
        anon_seconds = time.perf_counter() - anon_started
    else:
        results = [fast.Anonymized(t) for t in texts[keep]]

    kept_idx = df.index[keep]
    out = df.loc[kept_idx].copy()
    out["text"] = [r.text for r in results]
    out["pii_replaced"] = [r.changed for r in results]
    out["pii_count"] = pd.Series([len(r.replaced) for r in results], index=kept_idx, dtype="int64")
    # anonymization changes lengths (`<PERSON>` for `Al`): the bounds hold for the final text
    after = pd.Series([_length_reason(t, p, " after anonymization") for t in out["text"]], index=kept_idx)
    reasons.loc[kept_idx] = after
    good = after == ""
    out = out[good]
    counted = [r for r, g in zip(results, good) if g]

    rejected = df[reasons != ""]
    rejects = rejects_frame(rejected, STAGE, reasons[reasons != ""].tolist())
    for col in ("id", "text", "label", "source", "stage", "reason"):
        rejects[col] = rejects[col].astype("string")
    out = out.reset_index(drop=True)
    out["row"] = out["row"].astype("int64")
    write_parquet(out, Path(paths.clean) / "records.parquet")
    write_parquet(rejects.reset_index(drop=True), Path(paths.rejects) / f"{STAGE}.parquet")

    entities = Counter(t for r in counted for t in r.replaced)
    fallback = Counter(t for r in counted for t in r.fallback)
    reason_kinds = Counter(r.split(":")[0] for r in reasons if r)
    metrics = {
        "rows_in": len(df),
        "rows_out": len(out),
        "rows_rejected": len(rejects),
        "rejected": dict(sorted(reason_kinds.items())),  # rows per reason
        "rows_changed_by_cleaning": rows_changed,
        "pii": {
            "operator": p.pii_operator,
            "score_threshold": p.pii_score_threshold,
            "spacy_model": p.spacy_model,
            "rows_with_pii": int(out["pii_replaced"].sum()),
            "entities_replaced": int(sum(entities.values())),
            "by_entity": {k: int(v) for k, v in sorted(entities.items())},
            "by_safety_net": {k: int(v) for k, v in sorted(fallback.items())},
        },
        "labels": {k: int(v) for k, v in out["label"].value_counts().sort_index().items()},
    }
    if metrics["rows_in"] != metrics["rows_out"] + metrics["rows_rejected"]:  # a bug, never the data
        raise AssertionError(f"clean: counts do not reconcile: {metrics}")
    write_json(metrics, Path(paths.metrics) / f"{STAGE}.json")
    seconds = time.perf_counter() - started
    log.info("clean: %d rows in -> %d out, %d rejected%s; PII replaced in %d rows (%s); %.1f s in all, "
             "anonymization %.0f texts/s",
             metrics["rows_in"], metrics["rows_out"], metrics["rows_rejected"],
             f" {dict(sorted(reason_kinds.items()))}" if reason_kinds else "",
             metrics["pii"]["rows_with_pii"], ", ".join(f"{k} {v}" for k, v in metrics["pii"]["by_entity"].items())
             or "none", seconds, len(results) / max(anon_seconds, 1e-9) if anon_seconds else 0)
    if out.empty:
        raise CleanError(f"clean: every one of {len(df)} rows was rejected; see "
                         f"{Path(paths.rejects) / 'clean.parquet'} (reasons: {dict(reason_kinds)})")
    return metrics


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.clean, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
