"""Method table: every fine-tuning method (full, lora, ia3, prefix, prompt, p_tuning, adapter) trained
by the train stage with the same seed and budget, scored on the test split.

  python bench/train_methods.py --dataset sms                      # data/splits from dvc repro
  python bench/train_methods.py --dataset sms --splits /tmp/sms/data/splits --set epochs=2
  python bench/train_methods.py --dataset bitext --set max_length=64 --set epochs=3

Datasets:
  sms     the pipeline's splits (--splits, default data/splits), labels from params.yaml
  bitext  ../shared/data/bitext/customer_support_sample.csv (instruction -> intent, 27 labels), a
          stratified 70/10/20 split written to a temporary folder (never into the repository)
Each method runs `stages.train.run` in a fresh subprocess with params.yaml's train section plus the
--set overrides (the same for every method; each method keeps its own lr from its section), so
wall time and peak memory (peak RSS on CPU) are per method. Columns: test accuracy, macro F1,
F1 of the positive class (sms: spam), trainable share of parameters, wall time of run() (model
load + training + saving), peak memory. Writes bench/results/train_methods_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tuneline.params import Method  # noqa: E402  (light: pydantic only)

BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"
METHODS = list(get_args(Method))  # every train.method, from the one list


def bitext_splits(out: Path, seed: int) -> list[str]:
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(BITEXT)[["instruction", "intent"]].dropna()
    df = df.rename(columns={"instruction": "text", "intent": "label"})
    df = df.drop_duplicates("text").reset_index(drop=True)
    train, rest = train_test_split(df, test_size=0.3, stratify=df["label"], random_state=seed)
    val, test = train_test_split(rest, test_size=2 / 3, stratify=rest["label"], random_state=seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("val", val), ("test", test)):
        part.reset_index(drop=True).to_parquet(out / f"{name}.parquet", index=False)
    return sorted(df["label"].unique())


def parse_value(v: str):
    return yaml.safe_load(v)


def deep_merge(a: dict, b: dict) -> dict:
    return {**a, **{k: deep_merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                    for k, v in b.items()}}


def child(args) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    from stages.train import run
    from tuneline.evaluate.inference import predict_logits
    from tuneline.logs import setup_logging
    from tuneline.train.models import load_finetuned
    from tuneline.params import BaseParams, ClassificationParams, load_params

    setup_logging()
    params = load_params(ROOT / "params.yaml")
    over = json.loads(args.overrides)
    train = params.train.model_validate(deep_merge(params.train.model_dump(), {**over, "method": args.child}))
    labels = json.loads(args.labels)
    base, task = BaseParams(seed=params.base.seed), ClassificationParams(labels=labels)
    work = Path(args.work)
    paths = params.paths.model_copy(update={"splits": args.splits, "models": str(work / "models"),
                                            "checkpoints": str(work / "ckpt"), "metrics": str(work / "metrics"),
                                            "plots": str(work / "plots"), "registry": str(work / "registry")})
    t0 = time.perf_counter()
    m = run(train, base, task, paths)
    wall = time.perf_counter() - t0
    ft = load_finetuned(Path(paths.models) / "finetuned", cache_dir=paths.cache)
    test = pd.read_parquet(Path(args.splits) / "test.parquet")
    y = test.label.map({lab: i for i, lab in enumerate(labels)}).to_numpy(np.int64)
    pred = predict_logits(ft.model, ft.tokenizer, test.text.tolist(), train.max_length, 128).argmax(1)
    per = f1_score(y, pred, labels=list(range(len(labels))), average=None, zero_division=0)
    return {"method": args.child, "test_accuracy": round(float(accuracy_score(y, pred)), 4),
            "test_macro_f1": round(float(per.mean()), 4), "test_f1_positive": round(float(per[-1]), 4),
            "val": m["val"], "trainable_params": m["trainable_params"], "total_params": m["total_params"],
            "trainable_pct": m["trainable_pct"], "wall_seconds": round(wall, 1), "train_seconds": m["train_seconds"],
            "samples_per_s": m["samples_per_s"], "peak_memory_mb": m["peak_memory_mb"], "steps": m["steps"],
            "epochs_run": m["epochs_run"], "stopped_early": m["stopped_early"], "device": m["device"],
            "test_rows": len(test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["sms", "bitext"], default="sms")
    ap.add_argument("--splits", default=str(ROOT / "data" / "splits"), help="sms: folder with train/val/test parquet")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="train.* override for every method, e.g. epochs=2 (nested: lora.r=16)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--labels", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    from tuneline.params import load_params

    params = load_params(ROOT / "params.yaml")
    over: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        *parents, leaf = key.removeprefix("train.").split(".")
        d = over
        for k in parents:
            d = d.setdefault(k, {})
        d[leaf] = parse_value(value)
    tmp = Path(tempfile.mkdtemp(prefix="tuneline-methods-"))
    if args.dataset == "bitext":
        splits = tmp / "splits"
        labels = bitext_splits(splits, params.base.seed)
    else:
        splits, labels = Path(args.splits), list(params.classification.labels)
    out = Path(args.out or ROOT / "bench" / "results" / f"train_methods_{args.dataset}.json")
    results = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--child", method, "--overrides", json.dumps(over), "--labels",
               json.dumps(labels), "--splits", str(splits), "--work", str(tmp / method)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{method}: FAILED\n{proc.stderr[-3000:]}", flush=True)
            results.append({"method": method, "error": proc.stderr.strip().splitlines()[-1][:300]})
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{method:9s} acc {r['test_accuracy']:.4f}  f1 {r['test_macro_f1']:.4f}  "
              f"pos-f1 {r['test_f1_positive']:.4f}  trainable {r['trainable_pct']:.3f}%  {r['wall_seconds']:.0f} s  "
              f"{r['peak_memory_mb']:.0f} MB", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "train_methods", "dataset": args.dataset, "labels": len(labels), "overrides": over,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average_at_end": os.getloadavg(),
            "results": results}, indent=2) + "\n")
    pos = "spam F1" if args.dataset == "sms" else f"F1 of '{labels[-1]}'"
    print(f"\n| method | test accuracy | macro F1 | {pos} | trainable % | wall s | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error']} | | | | | |")
            continue
        print(f"| {r['method']} | {r['test_accuracy']:.4f} | {r['test_macro_f1']:.4f} | {r['test_f1_positive']:.4f} | "
              f"{r['trainable_pct']:.3f} | {r['wall_seconds']:.0f} | {r['peak_memory_mb']:.0f} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
