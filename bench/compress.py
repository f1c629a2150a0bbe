"""Compression benchmark: the compress stage's table for a teacher, plus optional extra variants.

Runs stages.compress.run (the same code as `dvc repro compress`) in a scratch folder on a copy of
the teacher, so the pipeline's own outputs are never touched, and prints the table as Markdown.

  python bench/compress.py                       # the pipeline's teacher and splits, params.yaml variants
  python bench/compress.py --sweep               # + other choices: student layers 1,3,5 and 0,1,2; 30/70%
                                                 #   sparsity; no recovery; 50% heads; per-tensor int8
  python bench/compress.py --models DIR --splits DIR   # another teacher (a folder holding finetuned/ and
                                                       #   calibrated/) and splits
  python bench/compress.py --table reports/metrics/compress.json   # only print an existing result

Writes bench/results/compress.json (the stage's compress.json). Timings are taken in one process,
teacher and variants interleaved; on a shared machine they are noisy (see `conditions` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneline.params import CompressParams, Paths, load_params  # noqa: E402

SCRATCH = ROOT / "bench" / "results" / "compress-run"
OUT = ROOT / "bench" / "results" / "compress.json"
SWEEP = [
    {"kind": "distill", "name": "distilled_135", "layers": [1, 3, 5]},
    {"kind": "distill", "name": "distilled_012", "layers": [0, 1, 2]},
    {"kind": "prune", "name": "pruned30", "method": "magnitude", "amount": 0.3},
    {"kind": "prune", "name": "pruned70", "method": "magnitude", "amount": 0.7},
    {"kind": "prune", "name": "pruned50_norecovery", "method": "magnitude", "amount": 0.5, "recovery_epochs": 0},
    {"kind": "prune", "name": "heads50", "method": "heads", "amount": 0.5},
    {"kind": "quantize", "name": "int8_per_tensor", "per_channel": False},
]
COLUMNS = ("name", "macro_f1", "accuracy", "size_mb", "params", "sparsity", "latency_ms_p50", "latency_ms_p95",
           "throughput_b32", "f1_ratio_vs_teacher", "speedup_vs_teacher", "size_ratio_vs_teacher", "build_seconds",
           "build_cpu_seconds")


def table(result: dict) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3f}" if abs(v) >= 1 else f"{v:.4f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in [result["teacher"]] + result["variants"]:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |")
            continue
        lines.append("| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |")
    c = result["conditions"]
    lines.append("")
    lines.append(f"Measured on {c.get('cpu')} ({c.get('cpu_count')} cores, {c.get('torch_threads')} torch threads), "
                 f"torch {c.get('torch')}, engine {c.get('quantized_engine')}; load average "
                 f"{c.get('load_avg_1m_before')} -> {c.get('load_avg_1m_after')}; {c.get('batch1_examples')} batch-1 "
                 f"examples and {c.get('batch32_batches')} batches of 32 per model, interleaved; test rows "
                 f"{c.get('test_rows')}; stage {c.get('stage_seconds')} s wall, {c.get('stage_cpu_seconds')} s CPU.")
    for t in result.get("targets", []):
        lines.append(f"- {t['variant']}: {t['metric']} {t['target']}: {t['value']:.4g} -> "
                     f"{'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="folder holding finetuned/ and calibrated/")
    ap.add_argument("--splits", type=Path, default=ROOT / "data" / "splits")
    ap.add_argument("--sweep", action="store_true", help="add the SWEEP variants to params.yaml's")
    ap.add_argument("--threads", type=int, help="override compress.threads (1 is far faster on a busy shared CPU)")
    ap.add_argument("--table", type=Path, help="print the table of an existing compress.json and stop")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return

    from stages.compress import run
    from tuneline.logs import setup_logging

    setup_logging()
    params = load_params(ROOT / "params.yaml")
    for need in (args.models / "finetuned", args.models / "calibrated", args.splits / "test.parquet"):
        if not need.exists():
            raise SystemExit(f"{need}: missing; run the pipeline first (dvc repro calibrate) or pass --models/--splits")
    shutil.rmtree(SCRATCH, ignore_errors=True)
    for name in ("finetuned", "calibrated"):  # calibrated/model.json points at ../finetuned: keep them side by side
        shutil.copytree(args.models / name, SCRATCH / "models" / name)
    paths = Paths(splits=str(args.splits), models=str(SCRATCH / "models"), metrics=str(SCRATCH / "metrics"),
                  plots=str(SCRATCH / "plots"), reports=str(SCRATCH), cache=params.paths.cache)
    p = params.compress
    if args.threads is not None:
        p = p.model_copy(update={"threads": args.threads})
    if args.sweep:
        p = CompressParams.model_validate({**p.model_dump(), "variants": [v.model_dump() for v in p.variants] + SWEEP})
    t0 = time.perf_counter()
    result = run(p, params.calibrate, params.base, params.classification, paths)
    result["conditions"]["bench_seconds"] = round(time.perf_counter() - t0, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
