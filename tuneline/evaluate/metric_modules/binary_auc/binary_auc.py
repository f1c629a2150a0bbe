"""ROC-AUC and PR-AUC (average precision) of a binary scorer, and the curves behind them.

A local `evaluate` metric module (loads offline: `evaluate.load("<this folder>")`), numpy only.
Matches scikit-learn: `roc_auc_score` (ties count one half: the Mann-Whitney U statistic) and
`average_precision_score` (sum over distinct thresholds of (R_n - R_{n-1}) * P_n, no interpolation).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "ROC-AUC and average precision (PR-AUC) for a binary task."
_KWARGS = """
Args:
    prediction_scores (list[float]): score of the positive class (higher = more positive).
    references (list[int]): 1 for the positive class, 0 otherwise.
Returns:
    roc_auc, pr_auc (floats; NaN when only one class is present), positives, negatives (ints).
"""


def _threshold_counts(references, scores):
    """Cumulative true/false positives at each distinct score, scores descending."""
    y = np.asarray(references, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"prediction_scores ({s.shape}) and references ({y.shape}) differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("references must be 0/1")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64), s[last]


def roc_curve(references, scores):
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf."""
    tps, fps, thr = _threshold_counts(references, scores)
    tpr = tps / tps[-1] if tps[-1] else np.full_like(tps, np.nan)
    fpr = fps / fps[-1] if fps[-1] else np.full_like(fps, np.nan)
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thr]


def pr_curve(references, scores):
    """(precision, recall, thresholds) for descending thresholds (recall rising), starting at
    recall 0, precision 1, threshold +inf. Precision[i] holds on the recall interval (recall[i-1], recall[i]]."""
    tps, fps, thr = _threshold_counts(references, scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps[-1] else np.full_like(tps, np.nan)
    return np.r_[1.0, precision], np.r_[0.0, recall], np.r_[np.inf, thr]


def roc_auc(references, scores):
    y = np.asarray(references, dtype=np.int64)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    fpr, tpr, _ = roc_curve(references, scores)
    return float(np.trapezoid(tpr, fpr))


def average_precision(references, scores):
    tps, fps, _ = _threshold_counts(references, scores)
    if tps[-1] == 0:
        return float("nan")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_auc(references, prediction_scores):
    """The module's result as a plain function (used for bootstrap resamples)."""
    y = np.asarray(references, dtype=np.int64)
    return {
        "roc_auc": roc_auc(y, prediction_scores),
        "pr_auc": average_precision(y, prediction_scores),
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
    }


class BinaryAuc(evaluate.Metric):
    """evaluate.Metric wrapper; `.scores(...)`, `.roc_curve(...)`, `.pr_curve(...)` are plain functions."""

    scores = staticmethod(binary_auc)
    roc_curve = staticmethod(roc_curve)
    pr_curve = staticmethod(pr_curve)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"prediction_scores": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, prediction_scores, references):
        return binary_auc(references, prediction_scores)
