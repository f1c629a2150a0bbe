"""Classification metrics through the `evaluate` library, with our own local metric modules.

Hub metrics (`evaluate.load("accuracy")`) need the network; ours live in
`tuneline/evaluate/metric_modules/<name>/<name>.py` and load offline by path:

  classification_scores  accuracy, precision/recall/F1 per class, macro and weighted; confusion matrix
  binary_auc             ROC-AUC and PR-AUC (average precision) for two-class tasks
  calibration_error      ECE (equal-width and adaptive bins), MCE, Brier, NLL

`classification_metrics(y_true, probs, labels)` is the one call the stages use (evaluate,
calibrate, compress, the retrain gate). Confidence intervals are percentile bootstrap
intervals over test rows: resample rows with replacement `n_bootstrap` times, recompute, take
the (1-level)/2 and (1+level)/2 quantiles. Each resample calls the module's plain `.scores`
function (the same code evaluate runs in `.compute`, without its Arrow batching).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
METRIC_MODULES = ("classification_scores", "binary_auc", "calibration_error", "generation_scores")
# metrics where lower is better (everything else: higher is better)
LOWER_IS_BETTER = frozenset({"ece", "ece_adaptive", "mce", "brier", "nll"})
CI_METRICS = ("accuracy", "macro_f1", "ece", "nll", "brier", "roc_auc", "pr_auc")


@functools.cache
def load_metric(name: str):
    """One of our local metric modules as an `evaluate` module (offline; cached per process)."""
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric module {name!r}; ours are {METRIC_MODULES}")
    import evaluate  # ~6 s to import: only when metrics are actually computed

    return evaluate.load(str(MODULES_DIR / name))


def class_ids(y: Sequence, labels: Sequence[str]) -> np.ndarray:
    """Class ids from ids or label strings (a label not in `labels` is an error naming it)."""
    arr = np.asarray(y)
    if arr.dtype.kind in "iu":
        if len(arr) and (arr.min() < 0 or arr.max() >= len(labels)):
            raise ValueError(f"class ids must lie in 0..{len(labels) - 1}")
        return arr.astype(np.int64)
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({str(v) for v in arr if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not in the label set {list(labels)}")
    return np.array([index[v] for v in arr], dtype=np.int64)


def point_metrics(y: np.ndarray, probs: np.ndarray, labels: Sequence[str], n_bins: int = 15) -> dict:
    """Every metric once, through evaluate's `compute` (no intervals)."""
    k = len(labels)
    pred = probs.argmax(axis=1)
    cls = load_metric("classification_scores").compute(predictions=pred, references=y, num_classes=k)
    cal = load_metric("calibration_error").compute(predictions=probs, references=y, n_bins=n_bins)
    out = {
        "n": len(y),
        "accuracy": cls["accuracy"],
        "macro_precision": cls["macro_precision"],
        "macro_recall": cls["macro_recall"],
        "macro_f1": cls["macro_f1"],
        "weighted_f1": cls["weighted_f1"],
        "ece": cal["ece"],
        "ece_adaptive": cal["ece_adaptive"],
        "mce": cal["mce"],
        "brier": cal["brier"],
        "nll": cal["nll"],
        "mean_confidence": cal["mean_confidence"],
    }
    if k == 2:
        auc = load_metric("binary_auc").compute(prediction_scores=probs[:, 1], references=y)
        out["roc_auc"], out["pr_auc"] = auc["roc_auc"], auc["pr_auc"]
        out["positive_label"] = labels[1]
    out["per_class"] = {
        lab: {
            "precision": cls["precision"][i],
            "recall": cls["recall"][i],
            "f1": cls["f1"][i],
            "support": int(cls["support"][i]),
        }
        for i, lab in enumerate(labels)
    }
    out["confusion_matrix"] = {"labels": list(labels), "matrix": cls["confusion_matrix"]}
    return out


def _resample_scores(y: np.ndarray, probs: np.ndarray, k: int, n_bins: int) -> dict[str, float]:
    pred = probs.argmax(axis=1)
    cls = load_metric("classification_scores").scores(y, pred, k)
    cal = load_metric("calibration_error").scores(y, probs, n_bins)
    out = {
        "accuracy": cls["accuracy"],
        "macro_f1": cls["macro_f1"],
        "ece": cal["ece"],
        "nll": cal["nll"],
        "brier": cal["brier"],
    }
    if k == 2:
        auc = load_metric("binary_auc").scores(y, probs[:, 1])
        out["roc_auc"], out["pr_auc"] = auc["roc_auc"], auc["pr_auc"]
    return out


def bootstrap_intervals(
    y: np.ndarray,
    probs: np.ndarray,
    k: int,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_bins: int = 15,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap interval per metric in CI_METRICS: {metric: {low, high}}."""
    rng = np.random.default_rng(seed)
    n = len(y)
    samples: dict[str, list[float]] = {}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        for name, value in _resample_scores(y[idx], probs[idx], k, n_bins).items():
            samples.setdefault(name, []).append(value)
    q = ((1 - level) / 2, (1 + level) / 2)
    out = {}
    for name, values in samples.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]  # a resample with one class has no AUC
        if len(v):
            lo, hi = np.quantile(v, q)
            out[name] = {"low": float(lo), "high": float(hi)}
    return out


def classification_metrics(
    y_true: Sequence,
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_bins: int = 15,
) -> dict:
    """Metrics of predicted probabilities against true labels.

    y_true: class ids (index into `labels`) or label strings; probs: [n, len(labels)], rows sum to 1.
    Returns n, accuracy, macro/weighted precision-recall-F1, ece (n_bins equal-width bins),
    ece_adaptive, mce, brier, nll, mean_confidence, per_class, confusion_matrix, roc_auc and
    pr_auc for two labels (positive class = labels[1]), and `ci` = {metric: {low, high}} with
    `ci_level` (percentile bootstrap; n_bootstrap=0 skips it).
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = class_ids(y_true, labels)
    if probs.ndim != 2 or probs.shape != (len(y), len(labels)):
        raise ValueError(f"probs must have shape ({len(y)}, {len(labels)}); got {probs.shape}")
    if len(y) == 0:
        raise ValueError("no rows to score")
    out = point_metrics(y, probs, labels, n_bins)
    if n_bootstrap:
        out["ci"] = bootstrap_intervals(
            y, probs, len(labels), n_bootstrap=n_bootstrap, level=level, seed=seed, n_bins=n_bins
        )
        out["ci_level"] = level
    return out


def reliability_bins(
    y_true: Sequence, probs: np.ndarray, labels: Sequence[str], n_bins: int = 15, adaptive: bool = False
) -> list[dict]:
    """Rows of a reliability diagram: lower, upper, count, confidence, accuracy, gap (non-empty bins)."""
    return load_metric("calibration_error").reliability_bins(
        np.asarray(probs, dtype=np.float64), class_ids(y_true, labels), n_bins, adaptive
    )


def binary_curves(y_true: Sequence, probs: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, list]]:
    """ROC and precision-recall curve points.

    Two labels: the positive class labels[1]. More: micro-averaged one-vs-rest (every (row, class)
    pair is one binary decision scored by its probability).
    """
    y = class_ids(y_true, labels)
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) == 2:
        ref, score = y, probs[:, 1]
    else:
        ref, score = np.eye(len(labels), dtype=np.int64)[y].ravel(), probs.ravel()
    m = load_metric("binary_auc")
    fpr, tpr, _ = m.roc_curve(ref, score)
    precision, recall, _ = m.pr_curve(ref, score)
    return {
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "pr": {"recall": recall.tolist(), "precision": precision.tolist()},
    }
