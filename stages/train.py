"""Fine-tune the base model on the training split (full or a PEFT method), keeping the best
validation checkpoint.

Reads: data/splits/{train,val}.parquet, the base model (train.base_model, resolved by tuneline.data.assets);
       with train.init_from production, models/production.json (the snapshot stage's copy of the
       registry pointer) and that version's model and train ids instead (tuneline.train.continual)
Writes: models/finetuned/ (a classifier folder, see tuneline.train.models), reports/metrics/train.json,
        reports/plots/train_steps.tsv (per step: loss, lr), reports/plots/train_val.tsv (per evaluation),
        and while running models/checkpoints/train-<fingerprint>/ (all train-* deleted after a success)
Params: base, classification, paths, train      Run: dvc repro train   (or: python -m stages.train)

Try a method without editing params.yaml: dvc exp run -S train.method=lora
train.reproducibility strict: main() restarts the process with tuneline.train.reproducibility.STRICT_ENV
before training (those variables are read when torch's libraries start), so `dvc repro` and
`python -m stages.train` both train under it; run() refuses strict mode in a process without it.
Checkpoints sit outside the DVC outputs and are keyed by a fingerprint of the train params,
the seed and labels, the split files and the base model's files: a run killed at any point
(even by SIGKILL) resumes from its last checkpoint when rerun with the same inputs, and ends
with the same weights as an uninterrupted run (CPU, same seed); other inputs start over.
A killed run's checkpoint never outlives the next run: a run with other inputs deletes it at its
start, a resumed run after its success. The run deletes models/finetuned first (as DVC does
before a run), and dvc.yaml marks it `persist` so DVC never restores this stage from its
run-cache: after a kill the next `dvc repro` always runs train, whatever its inputs.
Disk use (this run's checkpoint, stale ones removed) is logged and in reports/metrics/train.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.errors import UserError, run_main
from tuneline.data import assets
from tuneline.train.continual import production_init, replay_mix
from tuneline.logs import seed_everything, setup_logging
from tuneline.train import reproducibility
from tuneline.train.methods import adapter_meta, apply_method
from tuneline.train.models import MERGEABLE, META_FILE, build_classifier, count_parameters, save_finetuned
from tuneline.params import BaseParams, ClassificationParams, Paths, TrainParams, load_params
from tuneline.data.records import read_json, read_parquet, write_json, write_text
from tuneline.tasks.classification import fit
from tuneline.tasks.labels import LabelSet

log = logging.getLogger("tuneline.train")


class TrainError(UserError, ValueError):
    """The inputs cannot be trained on as configured: names what and how to fix it."""


def fingerprint(p: TrainParams, base: BaseParams, task: ClassificationParams, files: list[Path],
                base_dir: Path) -> str:
    """sha256 over everything a checkpoint depends on; a checkpoint resumes only under the same one."""
    h = hashlib.sha256()
    h.update(p.model_dump_json().encode())
    h.update(base.model_dump_json().encode())
    h.update(task.model_dump_json().encode())
    for f in files:
        h.update(assets.file_sha256(f).encode())
    h.update(assets.tree_sha256(base_dir).encode())
    return h.hexdigest()


def _mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1) if path.exists() else 0.0


def remove_checkpoints(root: Path, keep: Path | None = None) -> float:
    """Delete every train-* checkpoint folder under `root` but `keep`; the MB freed."""
    freed = 0.0
    for stale in sorted(root.glob("train-*")):
        if stale != keep:
            freed += _mb(stale)
            shutil.rmtree(stale, ignore_errors=True)
    return round(freed, 1)


def _frame(df: pd.DataFrame, labels: LabelSet, where: Path) -> tuple[list[str], np.ndarray]:
    y = labels.ids(df["label"].tolist(), where)
    if df.empty:
        raise TrainError(f"{where}: no rows; check the split stage's report")
    return df["text"].astype(str).tolist(), y


def _continual(p: TrainParams, base: BaseParams, paths: Paths, train: pd.DataFrame):
    """train.init_from production: (production to start from, rows to train on, counts), or Nones."""
    if p.init_from != "production":
        return None, train, None
    init = production_init(paths.models, paths.registry)
    if init is None:
        log.info("train: init_from production, but nothing was promoted yet: training from the base model")
        return None, train, None
    if p.method not in ("full", *MERGEABLE) or not json.loads((init.model_dir / META_FILE).read_text()).get("merged"):
        raise TrainError(f"train.init_from production needs a merged method (full, lora, ia3) for the "
                         f"production model and this run (train.method is {p.method!r})")
    rows, counts = replay_mix(train, init.seen, p.replay_ratio, base.seed)
    log.info("train: continuing from production %s on %d new rows + %d replayed (replay_ratio %s)",
             init.version, counts["new_rows"], counts["replay_rows"], p.replay_ratio)
    return init, rows, {**counts, "init_version": init.version}


def _strict(p: TrainParams) -> TrainParams:
    """Strict reproducibility in this process (its environment must hold the pins already): the params to train with."""
    missing = reproducibility.strict_env_missing(os.environ)
    if missing:
        raise TrainError("train.reproducibility is strict, but this process started without "
                         + " ".join(f"{k}={v}" for k, v in missing.items())
                         + ": run `python -m stages.train` or `dvc repro` (they restart with them), "
                           "or export them first")
    reproducibility.apply_strict_in_process()
    if p.threads not in (0, reproducibility.STRICT_THREADS):
        log.info("train: reproducibility strict trains on %d thread, not train.threads %d",
                 reproducibility.STRICT_THREADS, p.threads)
    return p.model_copy(update={"threads": reproducibility.STRICT_THREADS})


def run(p: TrainParams, base: BaseParams, task: ClassificationParams, paths: Paths) -> dict:
    if p.reproducibility == "strict":
        p = _strict(p)
    seed_everything(base.seed)
    # A killed run must not leave the previous model looking current (DVC keeps it: persist).
    shutil.rmtree(Path(paths.models) / "finetuned", ignore_errors=True)
    files = [Path(paths.splits) / "train.parquet", Path(paths.splits) / "val.parquet"]
    init, train_rows, continual = _continual(p, base, paths, read_parquet(files[0]))
    if continual is not None and continual["new_rows"] == 0:
        return keep_production(init, paths, continual, remove_checkpoints(Path(paths.checkpoints)))
    labels = LabelSet.of(task)
    train_texts, train_y = _frame(train_rows, labels, files[0])
    val_texts, val_y = _frame(read_parquet(files[1]), labels, files[1])
    base_dir = init.model_dir if init else assets.resolve_model(p.base_model, paths.cache)
    model, tokenizer = build_classifier(base_dir, labels.list, p.dropout)
    if p.method in ("prompt", "p_tuning"):
        virtual = getattr(p, p.method).num_virtual_tokens
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and p.max_length + virtual > limit:
            raise TrainError(f"train.max_length {p.max_length} + {virtual} virtual tokens exceeds the model's "
                             f"{limit} positions; lower train.max_length")
    model = apply_method(model, p, base_dir)
    trainable, total = count_parameters(model)
    fp = fingerprint(p, base, task, files, base_dir)
    ckpt_dir = Path(paths.checkpoints) / f"train-{fp[:16]}"
    stale_mb = remove_checkpoints(Path(paths.checkpoints), keep=ckpt_dir)  # other inputs: never resumed
    if stale_mb:
        log.info("train: removed %.1f MB of checkpoints written for other params or data", stale_mb)

    result = fit(model, tokenizer, train_texts, train_y, val_texts, val_y, labels.list, p, seed=base.seed,
                 checkpoint_dir=ckpt_dir, fingerprint=fp)

    meta = {"method": p.method, "labels": labels.list, "max_length": p.max_length,
            "base": assets.describe(p.base_model), "base_source": p.base_model.model_dump(),
            "best_step": result.best_step, "val": result.best,
            "init_from": "production" if init else "base", "init_version": init.version if init else None}
    if p.method == "adapter":
        meta["adapter"] = adapter_meta(p)
    save_finetuned(model, tokenizer, Path(paths.models) / "finetuned", meta)

    plots = Path(paths.plots)
    write_text(pd.DataFrame(result.curve, columns=["step", "epoch", "loss", "lr"]).to_csv(sep="\t", index=False),
               plots / "train_steps.tsv")
    evals = pd.DataFrame([{k: v for k, v in e.items() if k != "f1"} | {f"f1_{lab}": f for lab, f in e["f1"].items()}
                          for e in result.evals])
    write_text(evals.to_csv(sep="\t", index=False), plots / "train_val.tsv")
    metrics = {
        "method": p.method, "base": assets.describe(p.base_model), "device": result.device,
        "reproducibility": p.reproducibility, **reproducibility.runtime(), "threads": p.threads,
        "precision": result.precision, "val": result.best, "best_step": result.best_step,
        "steps": result.steps, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
        "trainable_params": trainable, "total_params": total,
        "trainable_pct": round(100 * trainable / total, 4),
        "train_seconds": result.train_seconds, "samples_per_s": result.samples_per_s,
        "peak_memory_mb": result.peak_memory_mb, "resumed_from_step": result.resumed_from,
        "train_rows": len(train_texts), "val_rows": len(val_texts), "max_length": p.max_length,
        "continual": continual,
        # disk: one checkpoint (about twice that while the next one is written), removed below
        "checkpoint_mb": _mb(ckpt_dir), "stale_checkpoints_removed_mb": stale_mb,
    }
    write_json(metrics, Path(paths.metrics) / "train.json")
    remove_checkpoints(Path(paths.checkpoints))  # this run's: the model is saved
    log.info("train: %s on %s, %d/%d params trainable (%.2f%%), %d steps in %.0f s (%.0f samples/s%s), "
             "best val %s at step %d, %s; checkpoints %.1f MB, removed", p.method, result.device, trainable, total,
             metrics["trainable_pct"], result.steps, result.train_seconds, result.samples_per_s,
             f", resumed at step {result.resumed_from}" if result.resumed_from else "",
             json.dumps({k: v for k, v in result.best.items() if k != "f1"}), result.best_step,
             "stopped early" if result.stopped_early else f"{result.epochs_run} epochs", metrics["checkpoint_mb"])
    return metrics


def keep_production(init, paths: Paths, continual: dict, stale_mb: float) -> dict:
    """No training row is new to the production model: the candidate is production itself, copied
    byte for byte with its training record (the gate then rejects it as unchanged)."""
    out = Path(paths.models) / "finetuned"
    tmp = out.with_name(f".{out.name}.keep")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(init.model_dir, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    lineage = init.model_dir.parent / "lineage"  # its train.json and curves, saved at promotion
    metrics = read_json(lineage / "train.json") if (lineage / "train.json").exists() else {}
    metrics = {**metrics, "steps": 0, "continual": {**continual, "kept_production": True},
               "checkpoint_mb": 0.0, "stale_checkpoints_removed_mb": stale_mb}
    write_json(metrics, Path(paths.metrics) / "train.json")
    for name in ("train_steps.tsv", "train_val.tsv"):
        src = lineage / name
        write_text(src.read_text(encoding="utf-8") if src.exists() else "step\n", Path(paths.plots) / name)
    log.info("train: no rows new to production %s: the candidate is production itself", init.version)
    return metrics


def main() -> None:
    setup_logging()
    params = load_params()
    if params.train.reproducibility == "strict" and reproducibility.strict_env_missing(os.environ):
        log.info("train: reproducibility strict: restarting with %s",
                 " ".join(f"{k}={v}" for k, v in reproducibility.STRICT_ENV.items()))
        logging.shutdown()
        argv = [sys.executable, *sys.orig_argv[1:]]  # this same command, in a process started with the pins
        env = reproducibility.strict_environ(os.environ)
        os.execve(sys.executable, argv, env)  # nosec B606 # our own interpreter and command line
    run(params.train, params.base, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
