"""Reproducibility across x86 processors, emulated on one machine: which knobs change the trained
weights and metrics, and what strict mode (tuneline.train.reproducibility.STRICT_ENV, one thread,
deterministic algorithms) costs in training time.

A processor is emulated by the settings that differ between processors and that PyTorch reads at
process start: `ATEN_CPU_CAPABILITY` (PyTorch's vectorized kernels: default / avx2 / avx512),
`ONEDNN_MAX_CPU_ISA`, MKL's `MKL_CBWR` branch, and the thread count (OMP_NUM_THREADS). Each
configuration trains in its own subprocess: the same base model, rows, seed and train params
(params.yaml's train section with --max-length, --epochs, checkpoints off), then scores --test-rows
test rows. Compared per pair against the reference of its mode: sha256 of the weights
(tuneline.train.reproducibility.weights_sha256), max |delta| over all weights, and test accuracy,
macro F1 and NLL (|delta| and the decimals they agree to: |delta| < 10**-d).

Training rows, steps and LR are chosen so one short epoch learns (params.yaml's lr 1e-4 with batch
32 predicts only ham after 12 steps, and agreeing metrics of a constant classifier prove nothing).

Timing: torch's default threads (native), one thread (threads-1) and strict each trained
--repeats times in alternation (so drift in machine load hits all three); medians of the training
time (fit(): tokenize, train, one val pass) and of its process CPU time.

  python bench/reproducibility.py                              # data/splits (after dvc repro), params.yaml's base model
  python bench/reproducibility.py --rows 512 --batch-size 16 --lr 2e-4 --repeats 3   # the defaults
  python bench/reproducibility.py --tiny                       # a 4-layer random BERT from a config instead (fast)
  python bench/reproducibility.py --only threads-1 strict-native --out bench/results/reproducibility-1thread.json
                                                               # strict vs one default thread: the kernels' cost

Emulation, not two physical processors: it shows which knobs move the bytes and that strict mode
removes the dependence on them on this machine; that the AVX2 and MKL COMPATIBLE branches compute
the same on another vendor's CPU is what MKL documents and what an AVX2 code path implies, not
something measured here. Writes bench/results/reproducibility.json.
"""

from __future__ import annotations

import argparse
import json
import math
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
OUT = ROOT / "bench" / "results" / "reproducibility.json"

TIMED = ("native", "threads-1", "strict-native")
"""Trained --repeats times each, alternating: strict against torch's default threads and against one thread."""
# (name, what it emulates, mode, env on top of the caller's); the first of each mode is its reference
CONFIGS = [
    ("native", "this AVX-512 machine, 2 threads (torch's default)", "default", {}),
    ("aten-avx2", "an AVX2 CPU's PyTorch kernels", "default", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("aten-default", "a CPU without AVX2 (PyTorch's scalar/SSE kernels)", "default",
     {"ATEN_CPU_CAPABILITY": "default"}),
    ("onednn-avx2", "oneDNN capped to AVX2", "default", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("mkl-avx2", "MKL_CBWR=AVX2 (an Intel-only branch: AUTO on this AMD)", "default", {"MKL_CBWR": "AVX2"}),
    ("mkl-compatible", "another MKL code branch (COMPATIBLE)", "default", {"MKL_CBWR": "COMPATIBLE"}),
    ("threads-1", "a 1-core machine (1 thread)", "default", {"OMP_NUM_THREADS": "1"}),
    ("avx2-box", "an AVX2 CPU with 1 thread (all of the above at once)", "default",
     {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}),
    ("strict-native", "strict mode on this AVX-512 machine, started with 2 threads", "strict", {}),
    ("strict-from-avx512", "strict mode started with ATEN avx512, MKL AUTO, 2 threads", "strict",
     {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "2"}),
    ("strict-from-avx2", "strict mode started on an emulated AVX2 box, 1 thread", "strict",
     {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}),
    ("strict-pre-avx2", "strict pins on a CPU without AVX2 (aten falls back to default)", "strict",
     {"ATEN_CPU_CAPABILITY": "default"}),
]


def worker_env(mode: str, extra: dict) -> dict:
    """The subprocess environment: the caller's, the emulated processor's settings, then (strict) the pins.
    strict-pre-avx2 is the one exception: its fallback is what a pre-AVX2 CPU would do to the pin."""
    from tuneline.train.reproducibility import strict_environ

    env = {k: v for k, v in os.environ.items()
           if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update({"PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update(extra)
    if mode == "strict":
        env = strict_environ(env)
        if extra.get("ATEN_CPU_CAPABILITY") == "default":
            env["ATEN_CPU_CAPABILITY"] = "default"
    return env


# --------------------------------------------------------------------------- one training, in a subprocess
def work(cfg: dict) -> dict:
    import resource

    import numpy as np
    import pandas as pd
    import torch
    from safetensors.torch import save_file
    from sklearn.metrics import accuracy_score, f1_score

    from tuneline.data import assets
    from tuneline.evaluate.inference import predict_logits
    from tuneline.logs import seed_everything
    from tuneline.params import load_params
    from tuneline.tasks.classification import fit
    from tuneline.train.models import build_classifier
    from tuneline.train.reproducibility import STRICT_THREADS, apply_strict_in_process, weights_sha256

    params = load_params(ROOT / "params.yaml")
    labels = list(params.classification.labels)
    ids = {lab: i for i, lab in enumerate(labels)}
    split = Path(cfg["splits"])
    train = pd.read_parquet(split / "train.parquet").sample(n=cfg["rows"], random_state=0)
    val = pd.read_parquet(split / "val.parquet").sample(n=cfg["val_rows"], random_state=0)
    test = pd.read_parquet(split / "test.parquet").sample(n=cfg["test_rows"], random_state=0)
    update = {"max_length": cfg["max_length"], "epochs": cfg["epochs"], "checkpoint_every": 0, "device": "cpu",
              "precision": "fp32", **({"lr": cfg["lr"]} if cfg.get("lr") else {}),
              **({"batch_size": cfg["batch_size"]} if cfg.get("batch_size") else {})}
    if cfg["mode"] == "strict":
        apply_strict_in_process()
        update["threads"] = STRICT_THREADS
    p = params.train.model_copy(update=update)
    seed = params.base.seed
    seed_everything(seed)
    base_dir = Path(cfg["tiny"]) if cfg.get("tiny") else assets.resolve_model(p.base_model, params.paths.cache)
    model, tok = build_classifier(base_dir, labels, p.dropout)
    y = lambda df: df.label.map(ids).to_numpy(np.int64)  # noqa: E731
    cpu0, t0 = time.process_time(), time.perf_counter()
    fit(model, tok, train.text.tolist(), y(train), val.text.tolist(), y(val), labels, p, seed=seed, progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    logits = predict_logits(model, tok, test.text.tolist(), p.max_length, p.eval_batch_size)
    yt = y(test)
    pred = logits.argmax(1)
    nll = float(torch.nn.functional.cross_entropy(torch.tensor(logits, dtype=torch.float64), torch.from_numpy(yt)))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if cfg.get("weights_out"):
        save_file(state, cfg["weights_out"])
    return {"sha256": weights_sha256(state), "train_seconds": round(seconds, 3), "train_cpu_seconds": round(cpu, 3),
            "accuracy": float(accuracy_score(yt, pred)), "macro_f1": float(f1_score(yt, pred, average="macro")),
            "nll": nll, "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def spawn(cfg: dict, env: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env, cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"worker {cfg['name']} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- comparing
def decimals(a: float, b: float) -> str:
    """Decimals two values agree to (|a-b| < 10**-d); 'all' when bit-identical."""
    d = abs(a - b)
    return "all" if d == 0 else str(max(0, math.floor(-math.log10(d))))


def max_abs_delta(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    return max(float((x[k].double() - y[k].double()).abs().max()) if x[k].numel() else 0.0 for k in x)


def tiny_bert(folder: Path) -> Path:
    """A random 4-layer BERT (hidden 128) with the real MiniLM tokenizer, for a quick look."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tuneline.data import assets
    from tuneline.params import load_params

    params = load_params(ROOT / "params.yaml")
    real = assets.resolve_model(params.train.base_model, params.paths.cache)
    tok = AutoTokenizer.from_pretrained(real)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=512, max_position_embeddings=512)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--splits", default=str(ROOT / "data" / "splits"))
    ap.add_argument("--rows", type=int, default=512, help="train rows (sampled with seed 0)")
    ap.add_argument("--val-rows", type=int, default=64, help="val rows scored once for the kept checkpoint")
    ap.add_argument("--test-rows", type=int, default=400, help="test rows scored for the metrics")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4, help="peak LR (params.yaml's 1e-4 learns nothing in 32 steps)")
    ap.add_argument("--batch-size", type=int, default=16, help="texts per step (16: 32 steps on 512 rows)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of default and of strict (>= 3)")
    ap.add_argument("--only", nargs="*", help="config names to run (default: all)")
    ap.add_argument("--tiny", action="store_true", help="a random 4-layer BERT from a config instead of MiniLM")
    ap.add_argument("--out", default=str(OUT), help="where to write the JSON results")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(work(json.loads(args.worker))))
        return

    tmp = Path(tempfile.mkdtemp(prefix="repro-bench-"))
    base = {"splits": args.splits, "rows": args.rows, "val_rows": args.val_rows, "test_rows": args.test_rows,
            "max_length": args.max_length, "epochs": args.epochs, "lr": args.lr,
            "batch_size": args.batch_size,
            "tiny": str(tiny_bert(tmp / "tiny")) if args.tiny else None}
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only]
    results: dict[str, dict] = {}
    t_all = time.perf_counter()
    refs = {mode: next(c for c in configs if c[2] == mode) for mode in ("default", "strict")
            if any(c[2] == mode for c in configs)}
    # the timed configs (torch's default threads, one thread, strict) first, alternating, --repeats times each
    timed = [c for c in configs if c[0] in TIMED]
    times: dict[str, list[dict]] = {c[0]: [] for c in timed}
    for i in range(max(1, args.repeats)):
        for name, _, mode, extra in timed:
            weights = str(tmp / f"{name}.safetensors") if i == 0 else None
            cfg = {**base, "name": name, "mode": mode, "weights_out": weights}
            r = spawn(cfg, worker_env(mode, extra))
            times[name].append(r)
            results.setdefault(name, r)
            print(f"  {name} run {i + 1}: {r['train_seconds']:.1f} s, sha {r['sha256'][:12]}", flush=True)
    for name, _, mode, extra in configs:
        if name in results:
            continue
        cfg = {**base, "name": name, "mode": mode, "weights_out": str(tmp / f"{name}.safetensors")}
        results[name] = spawn(cfg, worker_env(mode, extra))
        print(f"  {name}: {results[name]['train_seconds']:.1f} s, sha {results[name]['sha256'][:12]}", flush=True)

    rows = []
    for name, what, mode, extra in configs:
        ref = refs[mode][0]
        a, b = results[ref], results[name]
        rows.append({"config": name, "emulates": what, "mode": mode, "env": extra, "vs": ref,
                     "identical_bytes": a["sha256"] == b["sha256"], "sha256": b["sha256"],
                     "max_abs_weight_delta": max_abs_delta(tmp / f"{ref}.safetensors", tmp / f"{name}.safetensors"),
                     **{f"{m}": b[m] for m in ("accuracy", "macro_f1", "nll")},
                     **{f"{m}_abs_delta": abs(a[m] - b[m]) for m in ("accuracy", "macro_f1", "nll")},
                     **{f"{m}_decimals": decimals(a[m], b[m]) for m in ("accuracy", "macro_f1", "nll")},
                     "train_seconds": b["train_seconds"], "train_cpu_seconds": b["train_cpu_seconds"],
                     "cpu_capability": b["cpu_capability"], "torch_threads": b["torch_threads"],
                     "deterministic": b["deterministic"]})
    if "default" in refs and "strict" in refs:
        a, b = results[refs["default"][0]], results[refs["strict"][0]]
        cross = {"identical_bytes": a["sha256"] == b["sha256"],
                 "max_abs_weight_delta": max_abs_delta(tmp / f"{refs['default'][0]}.safetensors",
                                                       tmp / f"{refs['strict'][0]}.safetensors"),
                 **{f"{m}_decimals": decimals(a[m], b[m]) for m in ("accuracy", "macro_f1", "nll")}}
    else:
        cross = None
    timing = {name: {"train_seconds_median": statistics.median(r["train_seconds"] for r in rs),
                     "train_seconds": [r["train_seconds"] for r in rs],
                     "train_cpu_seconds_median": statistics.median(r["train_cpu_seconds"] for r in rs),
                     "train_cpu_seconds": [r["train_cpu_seconds"] for r in rs],
                     "same_bytes_every_repeat": len({r["sha256"] for r in rs}) == 1}
              for name, rs in times.items()}
    if "strict-native" in timing:
        for other in ("native", "threads-1"):
            if other in timing:
                for k in ("train_seconds_median", "train_cpu_seconds_median"):
                    timing[f"strict_over_{other}_{k.split('_')[1]}"] = round(
                        timing["strict-native"][k] / timing[other][k], 3)
    model = "random 4-layer BERT (hidden 128)" if args.tiny else "all-MiniLM-L6-v2"
    print(f"\nmodel: {model}, {args.rows} train rows, "
          f"{args.epochs} epoch(s), max_length {args.max_length}, {args.test_rows} test rows; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n")
    print("| config | mode | emulates | vs | same bytes | max abs weight delta | accuracy (decimals) "
          "| macro F1 (decimals) "
          "| NLL (decimals) | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "yes" if r["identical_bytes"] else "no"
        print(f"| {r['config']} | {r['mode']} | {r['emulates']} | {r['vs']} | {same} "
              f"| {r['max_abs_weight_delta']:.2e} | {r['accuracy']:.4f} ({r['accuracy_decimals']}) "
              f"| {r['macro_f1']:.4f} ({r['macro_f1_decimals']}) | {r['nll']:.6f} ({r['nll_decimals']}) "
              f"| {r['train_seconds']:.1f} |")
    if cross:
        print(f"\nstrict vs default on this machine: same bytes {cross['identical_bytes']}, max |delta| "
              f"{cross['max_abs_weight_delta']:.2e}, NLL decimals {cross['nll_decimals']}")
    for name, t in timing.items():
        if isinstance(t, dict):
            print(f"{name}: train s median {t['train_seconds_median']:.1f} {t['train_seconds']}, CPU s median "
                  f"{t['train_cpu_seconds_median']:.1f} {t['train_cpu_seconds']}, same bytes every repeat: "
                  f"{t['same_bytes_every_repeat']}")
        else:
            print(f"{name}: x{t}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": {"processor": platform.processor(),
                                                               "cores": os.cpu_count(),
                                                               "load_avg_end": os.getloadavg()},
                               "rows": rows, "strict_vs_default": cross, "timing": timing,
                               "runs": results, "wall_s": round(time.perf_counter() - t_all, 1)}, indent=2))
    for f in tmp.rglob("*.safetensors"):
        f.unlink()
    print(f"wrote {out} in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
