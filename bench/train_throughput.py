"""Training throughput: our train loop (tuneline.tasks.classification.fit, as the train stage runs it) against a
plain `transformers.Trainer` (default TrainingArguments, DataCollatorWithPadding), same model, data,
batch size, max length and epochs, full fine-tuning, in one run.

Each measurement runs in a fresh subprocess (so peak memory is per run, not per benchmark), the two
alternate (ours, Trainer, Trainer, ours, ...) so drift in machine load hits both, and the table
reports the median of --repeats runs and the ratio of the medians.

  python bench/train_throughput.py                                   # data/splits, params.yaml's base model
  python bench/train_throughput.py --splits /tmp/sms/data/splits --rows 1024 --repeats 3

Timed: the training call only (ours: fit(), which also tokenizes, scores --val-rows val rows once
per epoch and writes checkpoints every train.checkpoint_every steps; Trainer: trainer.train() on a
pre-tokenized dataset, no evaluation). Val accuracy (same val rows) is measured after the timer.
Samples/s = rows * epochs / seconds; samples per CPU-second = rows * epochs / process CPU time (less
sensitive to other load on a shared machine). Peak memory: the process's peak RSS on CPU,
torch.cuda.max_memory_allocated on CUDA. Writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "train_throughput.json"


def load_data(args, params):
    import numpy as np
    import pandas as pd

    labels = list(params.classification.labels)
    train = pd.read_parquet(Path(args.splits) / "train.parquet")
    if args.rows:
        train = train.sample(n=min(args.rows, len(train)), random_state=0).reset_index(drop=True)
    val = pd.read_parquet(Path(args.splits) / "val.parquet")
    if args.val_rows:
        val = val.sample(n=min(args.val_rows, len(val)), random_state=0).reset_index(drop=True)
    ids = {lab: i for i, lab in enumerate(labels)}
    return (params, labels, train.text.tolist(), train.label.map(ids).to_numpy(np.int64),
            val.text.tolist(), val.label.map(ids).to_numpy(np.int64))


def peak_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> dict:
    import torch

    from tuneline.data import assets
    from tuneline.evaluate.inference import predict_logits
    from tuneline.logs import seed_everything
    from tuneline.train.models import build_classifier
    from tuneline.params import load_params
    from tuneline.train.loop import pick_device
    from tuneline.tasks.classification import fit

    if args.threads:
        torch.set_num_threads(args.threads)
    params, labels, x, y, vx, vy = load_data(args, load_params(ROOT / "params.yaml"))  # this child's entry
    base_dir = assets.resolve_model(params.train.base_model, params.paths.cache)
    seed_everything(params.base.seed)
    model, tok = build_classifier(base_dir, labels)
    device = pick_device(params.train.device)
    if args.child == "ours":
        p = params.train.model_copy(update={"method": "full", "epochs": args.epochs, "batch_size": args.batch_size,
                                            "max_length": args.max_length, "max_steps": 0, "threads": 0})
        with tempfile.TemporaryDirectory() as ckpt:
            t0, c0 = time.perf_counter(), time.process_time()
            res = fit(model, tok, x, y, vx, vy, labels, p, seed=params.base.seed, checkpoint_dir=Path(ckpt),
                      fingerprint="bench", progress=False)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        extra = {"precision": res.precision, "val_macro_f1_internal": res.best["macro_f1"]}
    else:
        from datasets import Dataset
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        ds = Dataset.from_dict({"text": x, "label": y.tolist()})
        ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True,
                    remove_columns=["text"])
        with tempfile.TemporaryDirectory() as out:
            targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size,
                                      num_train_epochs=args.epochs, seed=params.base.seed, report_to="none",
                                      disable_tqdm=True)
            trainer = Trainer(model=model, args=targs, train_dataset=ds,
                              data_collator=DataCollatorWithPadding(tok))
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        extra = {"precision": "bf16" if targs.bf16 else "fp32"}
    model.eval()
    val_pred = predict_logits(model, tok, vx, args.max_length).argmax(1)
    return {"runner": args.child, "seconds": round(seconds, 2), "samples": len(x) * args.epochs,
            "samples_per_s": round(len(x) * args.epochs / seconds, 2), "cpu_seconds": round(cpu, 2),
            "samples_per_cpu_s": round(len(x) * args.epochs / cpu, 2), "peak_memory_mb": round(peak_mb(device), 1),
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "val_accuracy": round(float((val_pred == vy).mean()), 4), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", default=str(ROOT / "data" / "splits"), help="folder with train/val parquet")
    ap.add_argument("--rows", type=int, default=0, help="train rows (random sample); 0 = all")
    ap.add_argument("--val-rows", type=int, default=128,
                    help="val rows ours scores after each epoch (Trainer scores none); 0 = all")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in both runners; 0 = torch default")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--child", choices=["ours", "trainer"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    runs = {"ours": [], "trainer": []}
    base_cmd = [sys.executable, __file__, "--splits", args.splits, "--rows", str(args.rows),
                "--val-rows", str(args.val_rows), "--epochs",
                str(args.epochs), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                "--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for i in range(args.repeats):
        for runner in (("ours", "trainer") if i % 2 == 0 else ("trainer", "ours")):
            proc = subprocess.run(base_cmd + ["--child", runner], capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode != 0:
                sys.exit(f"{runner} run failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[runner].append(r)
            print(f"  run {i + 1}/{args.repeats} {runner:8s} {r['samples_per_s']:8.1f} samples/s  "
                  f"{r['peak_memory_mb']:7.0f} MB  val acc {r['val_accuracy']}", flush=True)

    def med(runner, key):
        return statistics.median(r[key] for r in runs[runner])

    summary = {runner: {"samples_per_s": med(runner, "samples_per_s"),
                        "samples_per_cpu_s": med(runner, "samples_per_cpu_s"),
                        "peak_memory_mb": med(runner, "peak_memory_mb"),
                        "seconds": med(runner, "seconds"), "val_accuracy": med(runner, "val_accuracy")}
               for runner in runs}
    speedup = summary["ours"]["samples_per_s"] / summary["trainer"]["samples_per_s"]
    cpu_speedup = summary["ours"]["samples_per_cpu_s"] / summary["trainer"]["samples_per_cpu_s"]
    device = runs["ours"][0]["device"]
    result = {
        "benchmark": "train_throughput", "device": device, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": runs["ours"][0]["torch_threads"], "load_average_at_end": os.getloadavg(),
        "settings": {"splits": args.splits, "rows": args.rows, "val_rows": args.val_rows, "epochs": args.epochs,
                     "batch_size": args.batch_size,
                     "max_length": args.max_length, "repeats": args.repeats, "threads": args.threads},
        "median": summary, "speedup_samples_per_s": round(speedup, 3),
        "speedup_samples_per_cpu_s": round(cpu_speedup, 3),
        "memory_ratio": round(summary["ours"]["peak_memory_mb"] / summary["trainer"]["peak_memory_mb"], 3),
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| runner | samples/s (median of {args.repeats}) | samples per CPU-second | peak memory MB "
          "| val accuracy |")
    print("|---|---:|---:|---:|---:|")
    for runner, name in (("trainer", "transformers.Trainer (defaults)"), ("ours", "tuneline train loop")):
        s = summary[runner]
        print(f"| {name} | {s['samples_per_s']:.1f} | {s['samples_per_cpu_s']:.1f} | {s['peak_memory_mb']:.0f} | "
              f"{s['val_accuracy']:.4f} |")
    print(f"\nspeedup {speedup:.2f}x (wall), {cpu_speedup:.2f}x (CPU time) on {device}; wrote {args.out}")


if __name__ == "__main__":
    main()
