"""Accuracy, precision, recall, F1 (per class, macro, weighted) and the confusion matrix.

A local `evaluate` metric module (loads offline: `evaluate.load("<this folder>")`). It is
self-contained (numpy only) because evaluate copies the script into its module cache. The
arithmetic matches scikit-learn's `precision_recall_fscore_support(labels=range(num_classes),
zero_division=0)`: a class with no predictions (or no support) scores 0, and every class in
0..num_classes-1 counts in the macro average, present or not.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy, per-class/macro/weighted precision, recall and F1, and the confusion matrix."
_KWARGS = """
Args:
    predictions (list[int]): predicted class ids.
    references (list[int]): true class ids.
    num_classes (int): number of classes; default max(id) + 1. Pass it so absent classes count.
Returns:
    accuracy, macro_precision, macro_recall, macro_f1, weighted_precision, weighted_recall,
    weighted_f1 (floats); precision, recall, f1, support (lists per class);
    confusion_matrix (list of rows: true class, columns: predicted class).
"""


def confusion_matrix(references, predictions, num_classes):
    """Counts [true, predicted] as an int64 array (num_classes x num_classes)."""
    y = np.asarray(references, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    if y.shape != p.shape:
        raise ValueError(f"predictions ({p.shape}) and references ({y.shape}) differ in length")
    if len(y) and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= num_classes):
        raise ValueError(f"class ids must lie in 0..{num_classes - 1}")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def scores_from_confusion(cm):
    """Every score of this module from a confusion matrix (rows: true, columns: predicted)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    n = cm.sum()
    weights = support / n if n else np.zeros(len(support))
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "confusion_matrix": cm.tolist(),
    }


def classification_scores(references, predictions, num_classes=None):
    """The module's result as a plain function (used for bootstrap resamples: no Arrow round trip)."""
    if num_classes is None:
        num_classes = int(max(np.max(references, initial=0), np.max(predictions, initial=0))) + 1
    return scores_from_confusion(confusion_matrix(references, predictions, num_classes))


class ClassificationScores(evaluate.Metric):
    """evaluate.Metric wrapper; `.scores(...)` is the same computation without evaluate's batching."""

    scores = staticmethod(classification_scores)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_classes=None):
        return classification_scores(references, predictions, num_classes)
