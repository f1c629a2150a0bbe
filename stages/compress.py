"""Compress the calibrated model for CPU deployment: distillation, pruning, int8 quantization, measured.

Reads: models/finetuned/ (the teacher), models/calibrated/ (its calibrator), data/splits/{train,val,test}.parquet
Writes: models/compressed/<variant>/ (weights, config, tokenizer, variant.json, calibrator/calibrator.json),
        reports/metrics/compress.json (teacher + one row per variant + measuring conditions),
        reports/plots/compress/variants.csv (DVC plot data), tradeoff.png (macro-F1 vs size and latency)
Params: base, classification, paths, calibrate (method and settings reused per variant), compress
Run: dvc repro compress   (or: python -m stages.compress)

The fine-tuned, calibrated model is the teacher. Each variant in compress.variants is built
from it (a quantize variant may start from an earlier variant), saved, loaded back from disk,
calibrated like the teacher (same calibrate.method, fitted on the val split) and scored on the
test split with tuneline.evaluate.scoring, the evaluate stage's code. Then the
teacher and every reloaded variant are timed in one process, interleaved (tuneline.compress.speed):
p50/p95 ms per example at batch 1 and examples/s at batch 32. Ratios are variant / teacher:
f1_ratio_vs_teacher, speedup_vs_teacher (batch-32 throughput), size_ratio_vs_teacher (weights on
disk). The issue's targets are checked and listed in compress.json, met or not.

A teacher whose method does not merge into plain weights (prefix, prompt, p_tuning, adapter)
is still distilled (the student starts from its base model's layers and learns the teacher's
logits); pruning and quantizing it are skipped with the reason recorded, because its adapted
behaviour does not live in the weights those variants change.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tuneline.errors import UserError, run_main
from tuneline.evaluate.calibration import load_calibrated
from tuneline.compress.variants import (
    base_dir, build_distilled, build_pruned, check_targets, n_params, order, score, summary, teacher_bytes,
    teacher_layers, write_plots,
)
from tuneline.compress.storage import load_variant, save_variant, weights_bytes
from tuneline.evaluate.inference import logits, tokenize
from tuneline.logs import seed_everything, setup_logging
from tuneline.train.models import build_classifier, load_finetuned
from tuneline.params import (
    BaseParams, CalibrateParams, ClassificationParams, CompressParams, DistillVariant, Paths, PruneVariant, QuantizeVariant, load_params,
)
from tuneline.compress.pruning import sparsity
from tuneline.compress.quantization import quantize_int8
from tuneline.data.records import read_parquet, replace_dir, write_json
from tuneline.compress.speed import benchmark
from tuneline.tasks.labels import LabelSet

log = logging.getLogger("tuneline.compress")

RELOAD_CHECK_ROWS = 256
"""Test rows on which a reloaded variant must predict exactly as the model that was saved."""


class CompressError(UserError, ValueError):
    pass


# --------------------------------------------------------------------------- the stage
def run(p: CompressParams, cal: CalibrateParams, base: BaseParams, task: ClassificationParams, paths: Paths) -> dict:
    started = (time.perf_counter(), time.process_time())
    seed_everything(base.seed)
    threads_before = torch.get_num_threads()
    if p.threads:
        torch.set_num_threads(p.threads)
    try:
        return _run(p, cal, base, LabelSet.of(task), paths, started)
    finally:
        torch.set_num_threads(threads_before)


def _run(p: CompressParams, cal: CalibrateParams, base: BaseParams, label_set: LabelSet, paths: Paths,
         started: tuple[float, float]) -> dict:
    models_dir = Path(paths.models)
    finetuned_dir, teacher_cal, _ = load_calibrated(models_dir / "calibrated")
    ft = load_finetuned(finetuned_dir, cache_dir=paths.cache)
    label_set.require(ft.labels, finetuned_dir, "retrain (dvc repro train)")
    labels, teacher, tok = label_set.list, ft.model, ft.tokenizer
    max_length = int(ft.meta["max_length"])
    merged = bool(ft.meta.get("merged", True))

    splits = {n: read_parquet(Path(paths.splits) / f"{n}.parquet") for n in ("train", "val", "test")}
    for n, df in splits.items():
        if df.empty:
            raise CompressError(f"the {n} split is empty; compress needs train, val and test rows")
    train = splits["train"]
    if p.train_limit is not None and len(train) > p.train_limit:
        train = train.sample(n=p.train_limit, random_state=base.seed).reset_index(drop=True)
    y = {n: label_set.ids(df["label"].tolist(), Path(paths.splits) / f"{n}.parquet")
         for n, df in (("train", train), ("val", splits["val"]), ("test", splits["test"]))}
    enc = {"train": tokenize(tok, train["text"].tolist(), max_length),
           "val": tokenize(tok, splits["val"]["text"].tolist(), max_length),
           "test": tokenize(tok, splits["test"]["text"].tolist(), max_length)}

    # the teacher: its own calibrator (models/calibrated), its logits once for every distillation
    t_metrics = score(teacher, enc["val"], enc["test"], y["val"], y["test"], cal, labels, p, base.seed,
                      calibrator=teacher_cal)
    t_train = logits(teacher, enc["train"], p.eval_batch_size)
    teacher_row = {"name": "teacher", "kind": "teacher", "method": ft.meta.get("method"), **summary(t_metrics),
                   "size_mb": teacher_bytes(ft, finetuned_dir, paths.cache) / 1e6, "params": n_params(teacher),
                   "layers": teacher_layers(teacher) if merged else None, "calibration": teacher_cal.method}

    out_parent = models_dir
    out_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".compressed.", dir=out_parent))
    rows: list[dict] = []
    timed: dict[str, tuple[nn.Module, Any]] = {"teacher": (teacher, tok)}
    fp32: dict[str, nn.Module] = {"teacher": teacher}
    try:
        for v in p.variants:
            t0, c0 = time.perf_counter(), time.process_time()
            row: dict[str, Any] = {"name": v.name, "kind": v.kind}
            skipped_source = next((r for r in rows if r.get("skipped") and r["name"] == getattr(v, "source", None)),
                                  None)
            if v.kind != "distill" and not merged and (v.kind == "prune" or v.source == "teacher"):
                row.update(skipped=f"teacher method {ft.meta.get('method')!r} does not merge into plain weights; "
                                   f"{v.kind} needs a full, lora or ia3 teacher")
            elif skipped_source is not None:
                row.update(skipped=f"its source {skipped_source['name']!r} was skipped")
            if row.get("skipped"):
                log.warning("compress: %s skipped: %s", v.name, row["skipped"])
                rows.append(row)
                continue
            if isinstance(v, DistillVariant):
                if not merged and v.hidden_weight > 0:
                    raise CompressError(f"compress.variants[{v.name}]: hidden_weight needs a teacher whose method "
                                        f"merges into its weights (full, lora, ia3), not {ft.meta.get('method')!r}; "
                                        "set hidden_weight: 0")
                init = teacher if merged else build_classifier(base_dir(ft.meta, paths.cache), labels)[0]
                model, details = build_distilled(v, teacher, init, enc["train"], y["train"], t_train, base.seed)
                fp32[v.name], source = model, "teacher"
            elif isinstance(v, PruneVariant):
                model, details = build_pruned(v, teacher, enc["train"], y["train"], t_train, base.seed)
                fp32[v.name], source = model, "teacher"
            else:
                if not isinstance(v, QuantizeVariant):
                    raise CompressError(f"compress.variants[{v.name}]: unknown kind {type(v).__name__}")
                if v.source not in fp32:
                    raise CompressError(f"compress.variants[{v.name}]: source {v.source!r} was not built")
                src = fp32[v.source]
                model = quantize_int8(src, per_channel=v.per_channel, embeddings=v.embeddings)
                src_row = next((r for r in rows if r["name"] == v.source), {})
                details = {"format": "int8", "quantization": {"per_channel": v.per_channel, "embeddings": v.embeddings},
                           "kept_heads": src_row.get("details", {}).get("kept_heads")}
                source = v.source
            # what is about to be saved, measured in memory on (up to) RELOAD_CHECK_ROWS test rows, so
            # the model loaded back from disk can be checked against it
            check = enc["test"].head(RELOAD_CHECK_ROWS)
            ref_logits = logits(model, check, p.eval_batch_size)
            fp = fp32.get(source if v.kind == "quantize" else v.name)
            sp = sparsity(fp)
            info = {"name": v.name, "kind": v.kind, "source": source, "labels": labels, "max_length": max_length,
                    "params": v.model_dump(mode="json"),
                    "sparsity": sp, **{k: details[k] for k in ("format", "kept_heads", "quantization") if k in details}}
            save_variant(model, tok, tmp / v.name, info)
            loaded = load_variant(tmp / v.name)  # everything below is measured on the reloaded model
            m = score(loaded.model, enc["val"], enc["test"], y["val"], y["test"], cal, labels, p, base.seed)
            m["calibrator"].save(tmp / v.name / "calibrator")
            # same rows in the same batches: dynamic int8 quantizes activations per batch, so its
            # logits depend on which texts share a batch
            reload_logits = logits(loaded.model, check, p.eval_batch_size)
            same = bool((reload_logits.argmax(1) == ref_logits.argmax(1)).all())
            if not same:
                raise CompressError(f"{v.name}: the model loaded back from {tmp / v.name} predicts differently from "
                                    "the model that was saved; the saved variant would not be what was measured")
            timed[v.name] = (loaded.model, loaded.tokenizer)
            row.update(source=source, **summary(m), size_mb=weights_bytes(tmp / v.name) / 1e6,
                       params=n_params(fp), sparsity=round(sp["prunable_sparsity"], 4),
                       sparsity_overall=round(sp["overall_sparsity"], 4), calibration=m["calibrator"].method,
                       reload_same_predictions=same,
                       reload_max_abs_logit_diff=float(np.abs(reload_logits - ref_logits).max()),
                       build_seconds=round(time.perf_counter() - t0, 1),
                       build_cpu_seconds=round(time.process_time() - c0, 1),
                       details={k: val for k, val in details.items() if k not in ("format", "quantization")})
            rows.append(row)
            log.info("compress: %s built and scored in %.0f s (macro-F1 %.4f)", v.name, row["build_seconds"],
                     row["macro_f1"])

        speed = benchmark(timed, splits["test"]["text"].tolist(), max_length=max_length,
                          batch1_examples=p.latency.batch1_examples, batch32_batches=p.latency.batch32_batches,
                          warmup=p.latency.warmup, threads=p.latency.threads, seed=base.seed)
        teacher_row.update(speed["models"]["teacher"])
        for r in rows:
            if r.get("skipped"):
                continue
            r.update(speed["models"][r["name"]])
            r["f1_ratio_vs_teacher"] = r["macro_f1"] / teacher_row["macro_f1"] if teacher_row["macro_f1"] else None
            r["f1_drop_points"] = 100.0 * (teacher_row["macro_f1"] - r["macro_f1"])
            r["speedup_vs_teacher"] = r["throughput_b32"] / teacher_row["throughput_b32"]
            r["latency_speedup_vs_teacher"] = teacher_row["latency_ms_p50"] / r["latency_ms_p50"]
            r["size_ratio_vs_teacher"] = r["size_mb"] / teacher_row["size_mb"] if teacher_row["size_mb"] else None
        replace_dir(tmp, models_dir / "compressed")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    ordered = [order(r) for r in rows]
    targets = check_targets(ordered)
    conditions = {**speed["conditions"], "shared_machine_note": "timings on a shared CPU are noisy; compare "
                  "variants only within one run (they were measured interleaved)",
                  "test_rows": len(y["test"]), "val_rows": len(y["val"]), "train_rows": len(y["train"]),
                  "calibration": cal.method,
                  "size": "bytes of weight files on disk (safetensors fp32 / int8 state_dict)",
                  "ratios": "variant / teacher: f1 (macro), speedup (batch-32 throughput), size (weights on disk)",
                  "stage_seconds": round(time.perf_counter() - started[0], 1),
                  "stage_cpu_seconds": round(time.process_time() - started[1], 1),
                  "cpu_seconds_note": "CPU time of this process, all threads: on a busy machine a better guide "
                                      "than wall time to how long the stage takes on an idle one"}
    result = {"teacher": teacher_row, "variants": ordered, "targets": targets, "conditions": conditions}
    write_json(result, Path(paths.metrics) / "compress.json")
    write_plots([teacher_row] + [r for r in ordered if not r.get("skipped")], Path(paths.plots) / "compress")
    log.info("compress: teacher macro-F1 %.4f, %.1f ex/s | %s | targets met %d/%d | %.0f s",
             teacher_row["macro_f1"], teacher_row["throughput_b32"],
             "; ".join(f"{r['name']} F1 {r['macro_f1']:.4f} x{r['speedup_vs_teacher']:.2f} "
                       f"size x{r['size_ratio_vs_teacher'] or float('nan'):.2f}" if not r.get("skipped")
                       else f"{r['name']} skipped" for r in ordered),
             sum(t["met"] for t in targets), len(targets), conditions["stage_seconds"])
    return result



def main() -> None:
    setup_logging()
    params = load_params()
    run(params.compress, params.calibrate, params.base, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
