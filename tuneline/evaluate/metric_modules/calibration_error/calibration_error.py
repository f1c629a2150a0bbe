"""Calibration of predicted probabilities: ECE (equal-width and adaptive bins), MCE, Brier, NLL.

A local `evaluate` metric module (loads offline: `evaluate.load("<this folder>")`), numpy only.
Definitions (Guo et al. 2017, "On Calibration of Modern Neural Networks"):
- confidence = max_k p_k, correct = argmax_k p_k == y (ties: the lowest class id, like argmax).
- ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|; equal-width bins are (i/M, (i+1)/M] for
  i = 0..M-1; adaptive (equal-mass) bins split the confidence-sorted rows into M groups of
  near-equal size (numpy.array_split). MCE = max_b |acc(B_b) - conf(B_b)| over non-empty
  equal-width bins.
- Brier = mean_i sum_k (p_ik - [y_i = k])^2, halved for two classes so it equals the usual
  binary (p - y)^2 (scikit-learn's brier_score_loss, scale_by_half="auto").
- NLL = mean_i -log p_i,y_i, probabilities clipped at 1e-12 (natural log).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Expected/maximum calibration error, Brier score and negative log-likelihood."
_KWARGS = """
Args:
    predictions (list[list[float]]): predicted class probabilities, rows summing to 1.
    references (list[int]): true class ids.
    n_bins (int): number of bins for ECE/MCE (default 15).
Returns:
    ece, ece_adaptive, mce, brier, nll, accuracy, mean_confidence (floats).
"""
NLL_CLIP = 1e-12


def _check(probs, references):
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(references, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"predictions must be [n, n_classes] with n = len(references); got {p.shape}, {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"class ids must lie in 0..{p.shape[1] - 1}")
    return p, y


def _bins_equal_width(conf, n_bins):
    # bin i holds (i/M, (i+1)/M]; confidence 0 (impossible for a max over classes) goes to bin 0
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(probs, references, n_bins=15, adaptive=False):
    """One row per non-empty bin: lower, upper, count, confidence (mean), accuracy, gap (acc - conf)."""
    p, y = _check(probs, references)
    return confidence_bins(p.max(axis=1), p.argmax(axis=1) == y, n_bins, adaptive)


def confidence_bins(confidences, correct, n_bins=15, adaptive=False):
    """`reliability_bins` from each prediction's confidence and whether it was right (e.g. one
    next-token prediction of a language model, whose full distribution is too large to keep)."""
    conf = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if conf.shape != correct.shape or conf.ndim != 1:
        raise ValueError(f"confidences and correct must be 1-D of one length; got {conf.shape}, {correct.shape}")
    rows = []
    if adaptive:
        order = np.argsort(conf, kind="mergesort")
        groups = [g for g in np.array_split(order, n_bins) if len(g)]
        for g in groups:
            rows.append((float(conf[g].min()), float(conf[g].max()), g))
    else:
        idx = _bins_equal_width(conf, n_bins)
        for b in range(n_bins):
            g = np.flatnonzero(idx == b)
            if len(g):
                rows.append((b / n_bins, (b + 1) / n_bins, g))
    out = []
    for lo, hi, g in rows:
        c, a = float(conf[g].mean()), float(correct[g].mean())
        out.append({"lower": lo, "upper": hi, "count": len(g), "confidence": c, "accuracy": a, "gap": a - c})
    return out


def _ece(rows):
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["gap"]) for r in rows)) if n else 0.0


def expected_calibration_error(probs, references, n_bins=15, adaptive=False):
    return _ece(reliability_bins(probs, references, n_bins, adaptive))


def confidence_calibration_error(confidences, correct, n_bins=15, adaptive=False):
    """ECE from (confidence, correct) pairs; the same bins as expected_calibration_error."""
    return _ece(confidence_bins(confidences, correct, n_bins, adaptive))


def maximum_calibration_error(probs, references, n_bins=15):
    rows = reliability_bins(probs, references, n_bins)
    return float(max((abs(r["gap"]) for r in rows), default=0.0))


def brier_score(probs, references):
    p, y = _check(probs, references)
    onehot = np.eye(p.shape[1])[y]
    per_row = ((p - onehot) ** 2).sum(axis=1)
    if p.shape[1] == 2:
        per_row = per_row / 2
    return float(per_row.mean()) if len(y) else 0.0


def negative_log_likelihood(probs, references):
    p, y = _check(probs, references)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], NLL_CLIP, 1.0)).mean()) if len(y) else 0.0


def calibration_error(references, predictions, n_bins=15):
    """The module's result as a plain function (used for bootstrap resamples)."""
    p, y = _check(predictions, references)
    return {
        "ece": expected_calibration_error(p, y, n_bins),
        "ece_adaptive": expected_calibration_error(p, y, n_bins, adaptive=True),
        "mce": maximum_calibration_error(p, y, n_bins),
        "brier": brier_score(p, y),
        "nll": negative_log_likelihood(p, y),
        "accuracy": float((p.argmax(axis=1) == y).mean()) if len(y) else 0.0,
        "mean_confidence": float(p.max(axis=1).mean()) if len(y) else 0.0,
    }


class CalibrationError(evaluate.Metric):
    """evaluate.Metric wrapper; `.scores(...)` and `.reliability_bins(...)` are plain functions."""

    scores = staticmethod(calibration_error)
    reliability_bins = staticmethod(reliability_bins)
    confidence_bins = staticmethod(confidence_bins)
    confidence_calibration_error = staticmethod(confidence_calibration_error)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, n_bins=15):
        return calibration_error(references, predictions, n_bins)
