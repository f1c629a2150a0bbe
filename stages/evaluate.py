"""Score the calibrated model on the test split: quality, calibration, uncertainty, slices, mistakes.

Reads: models/calibrated/ (calibrator + pointer to models/finetuned/), data/splits/test.parquet
Writes: reports/metrics/evaluate.json (headline, 95% bootstrap CIs, per class, calibration
        before/after, slices), reports/mistakes.json (most confident mistakes, anonymized text),
        reports/plots/evaluate/: confusion.csv, roc.csv, pr.csv, reliability_{uncalibrated,
        calibrated}.csv (DVC plot data) and confusion.png, curves.png, reliability.png
Params: base, classification, paths, calibrate (n_bins), evaluate     Run: dvc repro evaluate

Every number goes through tuneline.evaluate.metrics (the `evaluate` library with our local metric
modules). `headline` holds accuracy, macro_f1, ece, nll and brier (plus roc_auc and pr_auc for
two labels) of the calibrated model on the test split: the retrain gate and the report read it.
Slices (text length in characters, source, pii_replaced) show where the model is weaker; a slice
with fewer than evaluate.min_slice_rows rows is marked `small`. Mistake texts come from the
splits, which hold the clean stage's anonymized text; without a `pii_replaced` column (text that
never went through clean) no text is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.errors import UserError, run_main
from tuneline.evaluate import figures
from tuneline.evaluate.calibration import load_calibrated
from tuneline.evaluate.scoring import score_logits, score_texts
from tuneline.logs import setup_logging
from tuneline.evaluate.metrics import binary_curves, classification_metrics, reliability_bins
from tuneline.train.models import load_finetuned
from tuneline.params import BaseParams, CalibrateParams, ClassificationParams, EvaluateParams, Paths, load_params
from tuneline.tasks.labels import LabelSet
from tuneline.data.records import read_parquet, write_atomic, write_json

log = logging.getLogger("tuneline.evaluate")
CALIBRATION_KEYS = ("accuracy", "macro_f1", "ece", "ece_adaptive", "mce", "brier", "nll", "mean_confidence")


class EvaluateError(UserError, ValueError):
    pass


def length_bucket_names(edges: list[int]) -> list[str]:
    """[40, 80] -> ['1-40', '41-80', '81+'] (characters, inclusive)."""
    lows = [1] + [e + 1 for e in edges]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f"{lows[-1]}+"]


def length_buckets(texts: pd.Series, edges: list[int]) -> pd.Series:
    idx = np.searchsorted(np.asarray(edges), texts.str.len().to_numpy(), side="left")
    return pd.Series(np.asarray(length_bucket_names(edges))[idx], index=texts.index)


def slice_scores(y: np.ndarray, probs: np.ndarray, labels: list[str], n_bins: int, min_rows: int) -> dict:
    """Metrics of one slice; macro F1 over the classes that occur in it (true or predicted)."""
    m = classification_metrics(y, probs, labels, n_bootstrap=0, n_bins=n_bins)
    cm = np.asarray(m["confusion_matrix"]["matrix"])
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    f1 = np.array([m["per_class"][lab]["f1"] for lab in labels])
    return {
        "rows": len(y),
        "accuracy": m["accuracy"],
        "macro_f1": float(f1[present].mean()),
        "ece": m["ece"],
        "nll": m["nll"],
        "error_rate": 1 - m["accuracy"],
        "small": bool(len(y) < min_rows),
    }


def slices(
    test: pd.DataFrame, y: np.ndarray, probs: np.ndarray, labels: list[str], p: EvaluateParams, n_bins: int
) -> dict:
    groups = {"length": length_buckets(test["text"], p.length_buckets)}
    if "source" in test:
        groups["source"] = test["source"].astype(str)
    if "pii_replaced" in test:
        replaced = test["pii_replaced"].astype("boolean").fillna(False).astype(bool)
        groups["pii_replaced"] = pd.Series(np.where(replaced, "yes", "no"), index=test.index)
    out = {}
    for name, key in groups.items():
        order = length_bucket_names(p.length_buckets) if name == "length" else sorted(key.unique())
        out[name] = {}
        for value in order:
            mask = (key == value).to_numpy()
            if mask.any():
                out[name][value] = slice_scores(y[mask], probs[mask], labels, n_bins, p.min_slice_rows)
    return out


def confident_mistakes(
    test: pd.DataFrame, y: np.ndarray, probs: np.ndarray, labels: list[str], p: EvaluateParams
) -> list[dict]:
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][: p.n_mistakes]
    anonymized = "pii_replaced" in test
    rows = []
    for i in wrong:
        text = str(test["text"].iat[i])
        rows.append(
            {
                "id": str(test["id"].iat[i]) if "id" in test else str(i),
                "source": str(test["source"].iat[i]) if "source" in test else None,
                "label": labels[y[i]],
                "predicted": labels[pred[i]],
                "confidence": float(conf[i]),
                "text": (text if len(text) <= p.max_text_chars else text[: p.max_text_chars - 1] + "…")
                if anonymized
                else None,
            }
        )
    return rows


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    return write_atomic(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6f"))


def write_png(data: bytes, path: Path) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def run(p: EvaluateParams, calibrate: CalibrateParams, base: BaseParams, task: ClassificationParams,
        paths: Paths) -> dict:
    label_set = LabelSet.of(task)
    labels = label_set.list
    n_bins = calibrate.n_bins
    plots = Path(paths.plots) / "evaluate"
    finetuned_dir, cal, pointer = load_calibrated(Path(paths.models) / "calibrated")
    label_set.require(pointer["labels"], Path(paths.models) / "calibrated", "rerun train and calibrate (dvc repro)")
    ft = load_finetuned(finetuned_dir, cache_dir=paths.cache)
    test = read_parquet(Path(paths.splits) / "test.parquet")
    if test.empty:
        raise EvaluateError("the test split is empty: raise split.test_fraction")
    y = label_set.ids(test["label"].tolist(), Path(paths.splits) / "test.parquet")
    scored = score_texts(ft.model, ft.tokenizer, test["text"].tolist(), y, labels, cal,
                         max_length=int(ft.meta["max_length"]), batch_size=p.batch_size, n_bootstrap=p.n_bootstrap,
                         level=p.ci_level, seed=base.seed, n_bins=n_bins)
    uncalibrated = score_logits(scored.logits, y, labels, None, n_bins=n_bins)
    m, probs, before, raw = scored.metrics, scored.probs, uncalibrated.metrics, uncalibrated.probs
    headline = scored.headline()
    out = {
        "split": "test",
        "rows": len(y),
        "labels": labels,
        "model": {
            "method": ft.meta.get("method"),
            "base": ft.meta.get("base"),
            "calibration": cal.method,
            "temperature": cal.temperature if cal.method in ("temperature", "vector") else None,
        },
        "headline": headline,
        "ci": m.get("ci", {}),
        "ci_level": p.ci_level if p.n_bootstrap else None,
        "n_bootstrap": p.n_bootstrap,
        "macro": {"precision": m["macro_precision"], "recall": m["macro_recall"], "f1": m["macro_f1"]},
        "weighted_f1": m["weighted_f1"],
        "per_class": m["per_class"],
        "calibration": {
            "n_bins": n_bins,
            "uncalibrated": {k: before[k] for k in CALIBRATION_KEYS},
            "calibrated": {k: m[k] for k in CALIBRATION_KEYS},
        },
        "slices": slices(test, y, probs, labels, p, n_bins),
    }
    if len(labels) == 2:
        out["positive_label"] = labels[1]
    mistakes = confident_mistakes(test, y, probs, labels, p)

    # plot data and images
    pred = probs.argmax(axis=1)
    write_csv(
        pd.DataFrame({"actual": np.asarray(labels)[y], "predicted": np.asarray(labels)[pred]}), plots / "confusion.csv"
    )
    curves = binary_curves(y, probs, labels)
    write_csv(pd.DataFrame(curves["roc"]), plots / "roc.csv")
    write_csv(pd.DataFrame(curves["pr"]), plots / "pr.csv")
    bins = {
        "uncalibrated": reliability_bins(y, raw, labels, n_bins),
        "calibrated": reliability_bins(y, probs, labels, n_bins),
    }
    for name, rows in bins.items():
        write_csv(
            pd.DataFrame(rows, columns=["lower", "upper", "count", "confidence", "accuracy", "gap"]),
            plots / f"reliability_{name}.csv",
        )
    cm = np.asarray(m["confusion_matrix"]["matrix"])
    write_png(
        figures.confusion_matrix_plot(cm, labels, title=f"Confusion matrix, test split ({len(y)} rows)"),
        plots / "confusion.png",
    )
    kind = f"positive class '{labels[1]}'" if len(labels) == 2 else "micro-averaged one-vs-rest"
    write_png(figures.roc_pr_curves(curves, title=f"Test split, {kind}", auc=headline), plots / "curves.png")
    write_png(
        figures.reliability_diagram(
            {"uncalibrated (softmax)": bins["uncalibrated"], f"calibrated ({cal.method})": bins["calibrated"]},
            n_bins,
            title=f"Reliability on the test split ({len(y)} rows)",
        ),
        plots / "reliability.png",
    )
    write_json(mistakes, Path(paths.reports) / "mistakes.json")
    write_json(out, Path(paths.metrics) / "evaluate.json")

    ci = out["ci"]
    log.info(
        "evaluate: %d test rows: accuracy %.4f%s, macro F1 %.4f%s, ECE %.4f (uncalibrated %.4f), NLL %.4f; "
        "%d confident mistakes listed",
        len(y),
        headline["accuracy"],
        _ci(ci, "accuracy"),
        headline["macro_f1"],
        _ci(ci, "macro_f1"),
        headline["ece"],
        before["ece"],
        headline["nll"],
        len(mistakes),
    )
    return out


def _ci(ci: dict, key: str) -> str:
    return f" [{ci[key]['low']:.4f}, {ci[key]['high']:.4f}]" if key in ci else ""


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.evaluate, params.calibrate, params.base, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
