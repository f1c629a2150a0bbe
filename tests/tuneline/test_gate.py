import pandas as pd

from tuneline.deploy.gate import comparable_rows, decide
from tuneline.params import GateParams

P = GateParams(metric="macro_f1", margin=0.01, max_regression=0.02, min_score=0.5, min_eval_rows=20)


def s(v: float, n: int = 100) -> dict:
    return {"macro_f1": v, "accuracy": v, "n": n}


def test_promotes_a_better_candidate():
    d = decide({"test": s(0.90), "regression": s(0.88)}, {"test": s(0.85), "regression": s(0.88)}, P)
    assert d.promote and d.reasons == []
    assert "delta +0.0500" in d.summary


def test_rejects_a_worse_candidate_and_one_within_the_margin():
    worse = decide({"test": s(0.80), "regression": s(0.88)}, {"test": s(0.85), "regression": s(0.88)}, P)
    assert not worse.promote and any("test macro_f1" in r for r in worse.reasons)
    tie = decide({"test": s(0.855)}, {"test": s(0.85)}, P)
    assert not tie.promote and "needs > +0.0100" in tie.reasons[0]


def test_rejects_a_candidate_that_forgets():
    d = decide({"test": s(0.95), "regression": s(0.80)}, {"test": s(0.85), "regression": s(0.88)}, P)
    assert not d.promote
    assert len(d.reasons) == 1 and "forgets earlier data" in d.reasons[0]
    ok = decide({"test": s(0.95), "regression": s(0.865)}, {"test": s(0.85), "regression": s(0.88)}, P)
    assert ok.promote  # a drop of 0.015 is within max_regression 0.02


def test_first_model_needs_min_score_and_evidence():
    assert decide({"test": s(0.6)}, None, P).promote
    low = decide({"test": s(0.4)}, None, P)
    assert not low.promote and "min_score" in low.reasons[0]
    thin = decide({"test": s(0.9, n=5)}, None, P)
    assert not thin.promote and "5 test rows" in thin.reasons[0]


def test_too_few_comparable_rows_and_identical_weights_reject():
    d = decide({"test": s(0.95, n=10)}, {"test": s(0.5, n=10)}, P)
    assert not d.promote and "10 comparable test rows" in d.reasons[0]
    same = decide({"test": s(0.95), "sha256": "abc"}, {"test": s(0.5), "sha256": "abc"}, P)
    assert not same.promote and "production model itself" in same.reasons[0]
    nothing = decide({"test": None}, None, P)
    assert not nothing.promote


def test_comparable_rows_drop_what_each_model_trained_on():
    test = pd.DataFrame({"id": ["a", "b", "c", "d"], "text": list("abcd"), "label": ["ham"] * 4})
    reg = pd.DataFrame({"id": ["x", "y", "b"], "text": list("xyb"), "label": ["spam"] * 3})
    fair_test, fair_reg, info = comparable_rows(test, reg, production_seen={"a", "b"}, candidate_seen={"x"})
    assert list(fair_test["id"]) == ["c", "d"] and list(fair_reg["id"]) == ["y", "b"]
    assert info == {"test_rows": 4, "test_rows_seen_by_production": 2, "test_rows_compared": 2,
                    "regression_rows": 3, "regression_rows_seen_by_candidate": 1, "regression_rows_compared": 2}
    _, none, info = comparable_rows(test, None, set(), set())
    assert none is None and "regression_rows" not in info
