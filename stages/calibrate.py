"""Fit a calibrator on the validation split, so the model's probabilities can be trusted.

Reads: models/finetuned/ (the train stage's model), data/splits/val.parquet
Writes: models/calibrated/calibrator.json (the fitted map, plain JSON),
        models/calibrated/model.json (pointer to models/finetuned + its sha256),
        reports/metrics/calibrate.json (ECE equal-width and adaptive, MCE, Brier, NLL before/after
        on val, fitted temperature),
        reports/plots/calibrate/reliability_{before,after}.csv (DVC plot data), reliability.png
Params: classification, paths, calibrate     Run: dvc repro calibrate   (or: python -m stages.calibrate)

Only the val split is used (never train: the model is overconfident there; never test: that
belongs to evaluate). Temperature scaling keeps every argmax, so accuracy cannot change; vector
scaling and isotonic regression may move it a little. The numbers here are on the data the
calibrator was fitted on; evaluate reports both on the test split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tuneline.errors import UserError, run_main
from tuneline.evaluate import figures
from tuneline.evaluate.calibration import fit_calibrator, save_calibrated, softmax
from tuneline.evaluate.inference import predict_logits
from tuneline.logs import setup_logging
from tuneline.evaluate.metrics import classification_metrics, reliability_bins
from tuneline.train.models import load_finetuned
from tuneline.params import CalibrateParams, ClassificationParams, Paths, load_params
from tuneline.tasks.labels import LabelSet
from tuneline.data.records import read_parquet, write_atomic, write_json

log = logging.getLogger("tuneline.calibrate")
CALIBRATION_KEYS = ("ece", "ece_adaptive", "mce", "brier", "nll", "accuracy", "mean_confidence")


class CalibrateError(UserError, ValueError):
    pass


def write_reliability_csv(rows: list[dict], path: Path) -> Path:
    """DVC plot data: one row per non-empty bin (x = confidence, y = accuracy)."""
    df = pd.DataFrame(rows, columns=["lower", "upper", "count", "confidence", "accuracy", "gap"])
    return write_atomic(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6f"))


def run(p: CalibrateParams, task: ClassificationParams, paths: Paths) -> dict:
    labels = LabelSet.of(task)
    finetuned_dir = Path(paths.models) / "finetuned"
    out_dir = Path(paths.models) / "calibrated"
    plots = Path(paths.plots) / "calibrate"
    ft = load_finetuned(finetuned_dir, cache_dir=paths.cache)
    labels.require(ft.labels, finetuned_dir, "retrain (dvc repro train)")
    val = read_parquet(Path(paths.splits) / "val.parquet")
    if val.empty:
        raise CalibrateError("the val split is empty: raise split.val_fraction")
    y = labels.ids(val["label"].tolist(), Path(paths.splits) / "val.parquet")
    logits = predict_logits(ft.model, ft.tokenizer, val["text"].tolist(), int(ft.meta["max_length"]), p.batch_size)
    cal = fit_calibrator(p.method, logits, y, vector_l2=p.vector_l2, isotonic_floor=p.isotonic_floor)
    probs = {"before": softmax(logits), "after": cal.transform(logits)}
    scores = {
        name: classification_metrics(y, pr, labels.list, n_bootstrap=0, n_bins=p.n_bins) for name, pr in probs.items()
    }
    bins = {name: reliability_bins(y, pr, labels.list, p.n_bins) for name, pr in probs.items()}

    save_calibrated(out_dir, cal, finetuned_dir, labels.list)
    for name, rows in bins.items():
        write_reliability_csv(rows, plots / f"reliability_{name}.csv")
    png = figures.reliability_diagram(
        {"before (softmax)": bins["before"], f"after ({cal.method})": bins["after"]},
        p.n_bins,
        title=f"Reliability on the val split ({len(y)} rows)",
    )
    write_atomic(plots / "reliability.png", lambda tmp: tmp.write_bytes(png))

    before = {k: scores["before"][k] for k in CALIBRATION_KEYS}
    after = {k: scores["after"][k] for k in CALIBRATION_KEYS}
    out = {
        "method": cal.method,
        "split": "val",
        "rows": len(y),
        "n_bins": p.n_bins,
        "temperature": cal.temperature if cal.method in ("temperature", "vector") else None,
        "temperature_at_bound": bool(cal.fit.get("temperature_at_bound", False)),
        "before": before,
        "after": after,
        "ece_reduction": (1 - after["ece"] / before["ece"]) if before["ece"] > 0 else 0.0,
    }
    write_json(out, Path(paths.metrics) / "calibrate.json")
    if out["temperature_at_bound"]:
        log.warning(
            "calibrate: the temperature fit ended on its bound (T=%.3g): the val split may be "
            "too small or perfectly separated",
            cal.temperature,
        )
    log.info(
        "calibrate: %s on %d val rows%s: ECE %.4f -> %.4f, NLL %.4f -> %.4f, Brier %.4f -> %.4f",
        cal.method,
        len(y),
        f" (T={cal.temperature:.3f})" if out["temperature"] else "",
        before["ece"],
        after["ece"],
        before["nll"],
        after["nll"],
        before["brier"],
        after["brier"],
    )
    return out


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.calibrate, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
