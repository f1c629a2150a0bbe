"""Our local `evaluate` metric modules against scikit-learn, and ECE against a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from tuneline.evaluate.metrics import METRIC_MODULES, MODULES_DIR, classification_metrics, load_metric, reliability_bins


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_modules_ship_and_load_offline():
    for name in METRIC_MODULES:
        assert (MODULES_DIR / name / f"{name}.py").is_file()
        m = load_metric(name)
        assert type(m).__module__.endswith(name)  # our module, loaded through evaluate


@pytest.mark.parametrize("k", [2, 3, 7])
def test_classification_scores_match_sklearn(rng, k):
    y = rng.integers(0, k, 500)
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, k, 500))
    pred[pred == k - 1] = 0  # the last class is never predicted: zero-division path
    r = load_metric("classification_scores").compute(predictions=pred, references=y, num_classes=k)
    labels = list(range(k))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    p, rc, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(r["precision"], p)
    np.testing.assert_allclose(r["recall"], rc)
    np.testing.assert_allclose(r["f1"], f)
    assert r["support"] == s.tolist()
    for avg in ("macro", "weighted"):
        p, rc, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert (r[f"{avg}_precision"], r[f"{avg}_recall"], r[f"{avg}_f1"]) == pytest.approx((p, rc, f))
    assert r["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()


def test_binary_auc_matches_sklearn_with_ties(rng):
    y = rng.integers(0, 2, 400)
    scores = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.25, 400), 0, 1), 1)  # many ties
    r = load_metric("binary_auc").compute(prediction_scores=scores, references=y)
    assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores))
    assert r["pr_auc"] == pytest.approx(skm.average_precision_score(y, scores))
    fpr, tpr, _ = load_metric("binary_auc").roc_curve(y, scores)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert np.isnan(load_metric("binary_auc").scores(np.ones(5, int), np.arange(5.0))["roc_auc"])


@pytest.mark.parametrize("k", [2, 4])
def test_brier_and_nll_match_sklearn(rng, k):
    y = rng.integers(0, k, 300)
    probs = rng.dirichlet(np.ones(k), 300)
    r = load_metric("calibration_error").compute(predictions=probs, references=y)
    assert r["nll"] == pytest.approx(skm.log_loss(y, probs, labels=list(range(k))))
    assert r["brier"] == pytest.approx(skm.brier_score_loss(y, probs if k > 2 else probs[:, 1], labels=list(range(k))))


# Hand-computed: five binary predictions. confidence = max prob, correct = argmax == y.
#   row  probs          y  conf  correct  15-bin index (i/15, (i+1)/15]
#   0    [0.05, 0.95]   1  0.95  1        14
#   1    [0.95, 0.05]   1  0.95  0        14
#   2    [0.35, 0.65]   1  0.65  1        9
#   3    [0.65, 0.35]   0  0.65  1        9
#   4    [0.45, 0.55]   0  0.55  0        8
# bin 14: acc 0.5, conf 0.95 -> |gap| 0.45 * 2/5 = 0.18
# bin 9:  acc 1.0, conf 0.65 -> 0.35 * 2/5 = 0.14
# bin 8:  acc 0.0, conf 0.55 -> 0.55 * 1/5 = 0.11        ECE = 0.43, MCE = 0.55
# adaptive, 2 bins: sorted rows [4, 2, 3] | [0, 1]: |2/3 - 0.61667| * 3/5 + |0.5 - 0.95| * 2/5 = 0.03 + 0.18 = 0.21
# Brier (binary: (p1 - y)^2): (0.0025 + 0.9025 + 0.1225 + 0.1225 + 0.3025) / 5 = 0.2905
# NLL: -(ln .95 + ln .05 + ln .65 + ln .65 + ln .45) / 5 = 0.941420
HAND_PROBS = np.array([[0.05, 0.95], [0.95, 0.05], [0.35, 0.65], [0.65, 0.35], [0.45, 0.55]])
HAND_Y = np.array([1, 1, 1, 0, 0])


def test_ece_matches_a_hand_computed_example():
    m = load_metric("calibration_error")
    r = m.compute(predictions=HAND_PROBS, references=HAND_Y)
    assert r["ece"] == pytest.approx(0.43)
    assert r["mce"] == pytest.approx(0.55)
    assert r["brier"] == pytest.approx(0.2905)
    assert r["nll"] == pytest.approx(0.941420, abs=1e-6)
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["ece_adaptive"] == pytest.approx(np.mean([0.05, 0.95, 0.35, 0.35, 0.55]))  # 15 bins: one row each
    assert m.scores(HAND_Y, HAND_PROBS, 2)["ece_adaptive"] == pytest.approx(0.21)
    rows = reliability_bins(HAND_Y, HAND_PROBS, ["a", "b"])
    assert [(r["lower"] * 15, r["count"], r["accuracy"]) for r in rows] == [
        (pytest.approx(8), 1, 0.0),
        (pytest.approx(9), 2, 1.0),
        (pytest.approx(14), 2, 0.5),
    ]


def test_classification_metrics_bundle(rng):
    labels = ["ham", "spam"]
    y = rng.integers(0, 2, 400)
    probs = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.2, 400), 0.01, 0.99)
    probs = np.stack([1 - probs, probs], axis=1)
    m = classification_metrics(np.asarray(labels)[y], probs, labels, n_bootstrap=200, seed=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert set(m["per_class"]) == set(labels) and m["positive_label"] == "spam"
    for key in ("accuracy", "macro_f1", "ece", "nll", "brier", "roc_auc", "pr_auc"):
        assert m["ci"][key]["low"] <= m[key] <= m["ci"][key]["high"], key
    again = classification_metrics(y, probs, labels, n_bootstrap=200, seed=1)
    assert again["ci"] == m["ci"]  # seeded
    assert "ci" not in classification_metrics(y, probs, labels, n_bootstrap=0)
    with pytest.raises(ValueError, match="not in the label set"):
        classification_metrics(["ham", "eggs"], probs[:2], labels, n_bootstrap=0)
    with pytest.raises(ValueError, match="probs must have shape"):
        classification_metrics(y, probs[:, :1], labels, n_bootstrap=0)
