"""Building compressed variants and the compress table: what stages/compress.py runs per variant.

build_distilled / build_pruned make a variant from the teacher (training through
tuneline.train.loop via tuneline.compress.distillation.train_with_kd), `score` calibrates a model on val
like the teacher and scores it on test with tuneline.evaluate.scoring, and the table helpers
(`summary`, `check_targets`, `order`, `write_plots`) shape reports/metrics/compress.json.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import TypeAdapter
from torch import nn

from tuneline.evaluate import figures
from tuneline.data.assets import resolve_model
from tuneline.evaluate.calibration import fit_calibrator
from tuneline.compress.storage import weights_bytes
from tuneline.compress.distillation import every_other_layer, make_student, train_with_kd
from tuneline.evaluate.scoring import score_logits
from tuneline.evaluate.inference import Tokenized, logits
from tuneline.train.models import count_parameters
from tuneline.params import CalibrateParams, CompressParams, DistillVariant, PruneVariant, Source
from tuneline.compress.pruning import head_importance, heads_to_remove, magnitude_prune, make_permanent, remove_heads
from tuneline.data.records import write_atomic
from tuneline.train.loop import epoch_batches

# The acceptance targets (#5), checked on every run and reported met or missed:
# (variant kind, condition on the variant, metric, comparison, threshold)
TARGETS = (
    ("distill", "3 layers", "f1_ratio_vs_teacher", ">=", 0.97),
    ("distill", "3 layers", "speedup_vs_teacher", ">=", 1.8),
    ("quantize", "source teacher", "f1_drop_points", "<=", 1.0),
    ("quantize", "source teacher", "speedup_vs_teacher", ">=", 1.5),
    ("quantize", "source teacher", "size_ratio_vs_teacher", "<=", 0.5),
    ("prune", "magnitude, 50%", "f1_drop_points", "<=", 1.0),
)

SUMMARY_KEYS = ("macro_f1", "accuracy", "ece", "nll", "brier", "roc_auc", "pr_auc")
"""A variant's quality columns in the table (the scoring headline, macro_f1 first)."""


# --------------------------------------------------------------------------- building variants
def teacher_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def build_distilled(v: DistillVariant, teacher: nn.Module, init: nn.Module, enc: Tokenized, y: np.ndarray,
                    t_logits: np.ndarray, seed: int) -> tuple[nn.Module, dict]:
    layers = v.layers if v.layers is not None else every_other_layer(teacher_layers(init))
    student = make_student(init, layers)
    stats = train_with_kd(student, enc, y, teacher_logits=t_logits, teacher=teacher if v.hidden_weight > 0 else None,
                          epochs=v.epochs, batch_size=v.batch_size, learning_rate=v.lr, temperature=v.temperature,
                          kd_weight=v.kd_weight, hidden_weight=v.hidden_weight, seed=seed, desc=f"distill {v.name}")
    return student, {"format": "hf", "teacher_layers": layers, "layers": len(layers), "train": stats}


def build_pruned(v: PruneVariant, teacher: nn.Module, enc: Tokenized, y: np.ndarray, t_logits: np.ndarray,
                 seed: int) -> tuple[nn.Module, dict]:
    model = copy.deepcopy(teacher)
    info: dict[str, Any] = {"method": v.method, "amount": v.amount}
    if v.method == "magnitude":
        magnitude_prune(model, v.amount)
        info["format"] = "hf"
    else:
        batches = epoch_batches(enc.lengths, None, v.batch_size, seed, 0)[: v.importance_batches]
        imp = head_importance(model, [(enc.batch(idx), torch.tensor(y[idx])) for idx in batches])
        kept = {str(li): hs for li, hs in remove_heads(model, heads_to_remove(imp, v.amount)).items()}
        info.update(format="heads", kept_heads=kept, heads_kept=sum(len(h) for h in kept.values()),
                    heads_total=sum(len(x) for x in imp), importance=[np.round(x, 4).tolist() for x in imp])
    if v.recovery_epochs > 0:
        info["train"] = train_with_kd(model, enc, y, teacher_logits=t_logits, epochs=v.recovery_epochs,
                                      batch_size=v.batch_size, learning_rate=v.lr, temperature=v.temperature,
                                      kd_weight=v.kd_weight, seed=seed, desc=f"recover {v.name}")
    make_permanent(model)
    return model, info


def n_params(model: nn.Module) -> int:
    return count_parameters(model)[1]

# --------------------------------------------------------------------------- scoring
def score(model: nn.Module, enc_val: Tokenized, enc_test: Tokenized, y_val: np.ndarray, y_test: np.ndarray,
          cal: CalibrateParams, labels: list[str], p: CompressParams, seed: int, calibrator=None) -> dict:
    """Calibrate on val (same method as the teacher, unless given its calibrator) and score on test
    with tuneline.evaluate.scoring, the evaluate stage's code; the metrics hold the calibrator."""
    if calibrator is None:
        calibrator = fit_calibrator(cal.method, logits(model, enc_val, p.eval_batch_size), y_val,
                                    vector_l2=cal.vector_l2, isotonic_floor=cal.isotonic_floor)
    m = score_logits(logits(model, enc_test, p.eval_batch_size), y_test, labels, calibrator,
                     n_bootstrap=p.n_bootstrap, seed=seed, n_bins=cal.n_bins).metrics
    return {**m, "calibrator": calibrator}


def summary(m: dict) -> dict:
    out = {k: m[k] for k in SUMMARY_KEYS if k in m}
    if "ci" in m and "macro_f1" in m["ci"]:
        out["macro_f1_ci"] = [m["ci"]["macro_f1"]["low"], m["ci"]["macro_f1"]["high"]]
    return out


def check_targets(variants: list[dict]) -> list[dict]:
    out = []
    for kind, condition, metric, op, threshold in TARGETS:
        for v in variants:
            if v.get("kind") != kind or v.get("skipped"):
                continue
            d = v.get("details", {})
            if kind == "distill" and d.get("layers") != 3:
                continue
            if kind == "quantize" and v.get("source") != "teacher":
                continue
            if kind == "prune" and not (d.get("method") == "magnitude" and abs(d.get("amount", 0) - 0.5) < 1e-9):
                continue
            value = v.get(metric)
            met = value is not None and (value >= threshold if op == ">=" else value <= threshold)
            out.append({"variant": v["name"], "kind": kind, "condition": condition, "metric": metric,
                        "target": f"{op} {threshold}", "value": value, "met": bool(met)})
    return out


def write_plots(rows: list[dict], plots: Path) -> None:
    cols = ["name", "kind", "macro_f1", "accuracy", "size_mb", "params", "latency_ms_p50", "latency_ms_p95",
            "throughput_b32"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    write_atomic(plots / "variants.csv", lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
    png = figures.tradeoff_chart(rows, "macro_f1", ["size_mb", "latency_ms_p50", "throughput_b32"],
                                 "Test macro-F1 against size on disk, batch-1 latency and batch-32 throughput")
    write_atomic(plots / "tradeoff.png", lambda tmp: tmp.write_bytes(png))

KEY_ORDER = ("name", "kind", "source", "macro_f1", "accuracy", "size_mb", "params", "sparsity", "latency_ms_p50",
             "latency_ms_p95", "throughput_b32", "f1_ratio_vs_teacher", "f1_drop_points", "speedup_vs_teacher",
             "latency_speedup_vs_teacher", "size_ratio_vs_teacher")


def order(row: dict) -> dict:
    """Headline keys first (the report's table follows this order), details last."""
    return {**{k: row[k] for k in KEY_ORDER if k in row}, **{k: v for k, v in row.items() if k not in KEY_ORDER}}


def base_dir(meta: dict, cache: str | Path) -> Path:
    """The base model folder a fine-tuned model's metadata names (`base_source`), resolved offline-first."""
    return resolve_model(TypeAdapter(Source).validate_python(meta["base_source"]), cache)


def teacher_bytes(ft, finetuned_dir: Path, cache: str | Path) -> int:
    """Weights on disk of the teacher: its own folder, or (a method that does not merge) base + adapter."""
    own = weights_bytes(finetuned_dir)
    if own:
        return own
    adapter = sum(f.stat().st_size for f in (finetuned_dir / "adapter").rglob("*")
                  if f.suffix in (".safetensors", ".bin"))
    return weights_bytes(base_dir(ft.meta, cache)) + adapter
