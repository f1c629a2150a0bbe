"""SFT throughput: our SFT (tuneline.tasks.sft.fit_sft on the shared loop) against TRL's `SFTTrainer`,
same model, data, batch size, max length and steps, full fine-tuning, loss on the responses only.

  python bench/sft_vs_trl.py                                  # SmolLM2-135M, 48 bitext examples, 3 repeats
  python bench/sft_vs_trl.py --steps 12 --batch 4 --max-length 256 --repeats 3 --runners ours,trl

Model: SmolLM2-135M-Instruct from the pinned GGUF (tuneline.tasks.generation.prepare_gguf_model, cached
under --cache). Data: --steps * --batch examples drawn (seed 0) from the bitext customer-support sample
(read from ../shared, never copied), so both runners train one pass over exactly the same examples.
Runners, each in a fresh subprocess, alternating (ours, trl, ..., then reversed) so machine-load drift
hits all of them; the table reports medians of --repeats:
  ours       fit_sft(method=full, batch, max_length, max_steps=steps), no validation, no checkpoints, fp32
  ours_bf16  the same with precision=bf16 (the loop's bf16 autocast, on the CPU too)
  trl        SFTTrainer + SFTConfig defaults (on a CPU: use_cpu=True, which its bf16 default requires;
             so bf16 autocast and gradient checkpointing are on, as TRL ships them), conversational
             prompt/completion data (completion-only loss)
  trl_fp32   the same with bf16=False, gradient_checkpointing=False (what our loop does on a CPU)
Timed: ours = the whole fit_sft call (tokenization, method, loop); TRL = trainer.train() only (its
tokenization happens in the constructor, outside the timer). Tokens/s = real (unpadded, truncated to
max_length) tokens of the examples / seconds. Peak memory = the process's peak RSS (model load included).
Writes bench/sft_vs_trl.json.
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
OUT = ROOT / "bench" / "sft_vs_trl.json"
BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"


def examples(args):
    import numpy as np

    from tuneline.data.conversations import read_bitext

    ex = read_bitext(args.data).examples
    pick = np.random.default_rng(0).choice(len(ex), size=args.steps * args.batch, replace=False)
    return [ex[i] for i in sorted(pick)]


def worker(args) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneline.tasks.generation import prepare_gguf_model

    folder = prepare_gguf_model(args.cache)
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ex = examples(args)
    out = {"runner": args.worker}
    if args.worker in ("ours", "ours_bf16"):
        from tuneline.tasks.sft import SFTSettings, fit_sft

        s = SFTSettings(method="full", batch_size=args.batch, max_length=args.max_length, max_steps=args.steps,
                        epochs=1, lr=2e-5, schedule="linear", warmup_ratio=0.0, device="cpu",
                        precision="bf16" if args.worker == "ours_bf16" else "fp32", threads=args.threads)
        t0 = time.perf_counter()
        r = fit_sft(model, tok, ex, [], s, seed=0, progress=False)
        seconds = time.perf_counter() - t0
        out.update(tokens=r.train_tokens, steps=r.loop.steps, final_loss=r.loop.curve[-1]["loss"],
                   first_loss=r.loop.curve[0]["loss"], precision=r.loop.precision)
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_list([{"prompt": e.history, "completion": [{"role": "assistant", "content": e.response}]}
                                for e in ex])
        extra = {"bf16": False, "gradient_checkpointing": False} if args.worker == "trl_fp32" else {}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = SFTConfig(output_dir=tmp, report_to="none", use_cpu=True, save_strategy="no", seed=0,
                            per_device_train_batch_size=args.batch, max_length=args.max_length,
                            max_steps=args.steps, disable_tqdm=True, **extra)
            trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
            t0 = time.perf_counter()
            result = trainer.train()
            seconds = time.perf_counter() - t0
        lengths = [min(len(x), args.max_length) for x in trainer.train_dataset["input_ids"]]
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        out.update(tokens=int(sum(lengths)), steps=int(result.global_step), final_loss=losses[-1] if losses else None,
                   precision="bf16" if cfg.bf16 else "fp32", gradient_checkpointing=bool(cfg.gradient_checkpointing))
    out.update(seconds=round(seconds, 2), tokens_per_s=round(out["tokens"] / seconds, 1),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               cpu_seconds=round(time.process_time(), 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(BITEXT))
    ap.add_argument("--cache", default="~/.cache/tuneline")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runners", default="ours,trl,trl_fp32")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args)))
        return

    runners = args.runners.split(",")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads)}
    runs: dict[str, list[dict]] = {r: [] for r in runners}
    t_all = time.perf_counter()
    for rep in range(args.repeats):
        for runner in runners if rep % 2 == 0 else runners[::-1]:
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                cmd = [sys.executable, __file__, "--worker", runner, "--result", f.name, "--data", args.data,
                       "--cache", args.cache, "--steps", str(args.steps), "--batch", str(args.batch),
                       "--max-length", str(args.max_length), "--threads", str(args.threads)]
                subprocess.run(cmd, check=True, env=env, cwd=ROOT)
                r = json.loads(Path(f.name).read_text())
            runs[runner].append(r)
            print(json.dumps(r), flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("tokens_per_s", "seconds", "peak_rss_mb", "cpu_seconds")}
           for k, v in runs.items()}
    print(f"\nSmolLM2-135M full SFT, {args.steps} steps x batch {args.batch}, max length {args.max_length}, "
          f"{args.threads} threads, medians of {args.repeats}  ({time.perf_counter() - t_all:.0f} s in all)")
    print("| runner | tokens/s (median) | runs | train s | peak RSS MB | tokens/CPU-s |")
    print("|---|---:|---|---:|---:|---:|")
    for k, v in runs.items():
        tok_per_cpu = statistics.median(x["tokens"] / x["cpu_seconds"] for x in v)
        print(f"| {k} | {med[k]['tokens_per_s']:.1f} | {', '.join(str(x['tokens_per_s']) for x in v)} | "
              f"{med[k]['seconds']:.1f} | {med[k]['peak_rss_mb']:.0f} | {tok_per_cpu:.1f} |")
    if "ours" in med:
        for k in med:
            if k != "ours":
                print(f"speedup ours / {k}: {med['ours']['tokens_per_s'] / med[k]['tokens_per_s']:.2f}x tokens/s, "
                      f"peak RSS {med['ours']['peak_rss_mb'] / med[k]['peak_rss_mb']:.2f}x")
    Path(args.out).write_text(json.dumps({
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "result")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "runs": runs, "median": med}, indent=1))


if __name__ == "__main__":
    main()
