"""SFT methods: the base SmolLM2-135M-Instruct against each fine-tuning method, scored on held-out bitext.

  python bench/sft_methods.py                                   # 64 train, 16 test, 1 epoch, 2 threads
  python bench/sft_methods.py --train 8 --test 4 --max-steps 2 --methods lora --out /tmp/x.json   # a smoke run

Model: SmolLM2-135M-Instruct from the pinned GGUF (tuneline.tasks.generation.prepare_gguf_model, cached
under --cache). Data: the bitext customer-support sample (read from ../shared, never copied); its rows
(one single-turn example each, id = row number) are shuffled with --seed and split by row id: the first
--test rows are the test set, the next --train rows the train set, so no row is in both.
Runs, each in a fresh subprocess (memory isolated; peak RSS = resource.getrusage maxrss of that process,
model load included):
  base       the untouched model, scored once
  <method>   fit_sft(method, batch, max_length, epochs, lr per method, fp32, no validation, no
             checkpoints) on the train set, then scored on the test set
Scoring: tuneline.tasks.sft.evaluate_generation (greedy, --max-new-tokens), ROUGE-L / BLEU / chrF (0-100)
with --n-bootstrap bootstrap 95% intervals, perplexity of the reference responses. No val set is
passed (no temperature calibration), to keep the run short. A method that fails is recorded with its
error, not dropped. Writes bench/sft_methods.json and prints a markdown table.
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
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "sft_methods.json"
BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"
METHODS = ("full", "lora", "ia3", "prompt", "prefix", "p_tuning", "adapter")
LR = {"full": 5e-5, "lora": 5e-4, "ia3": 1e-3, "adapter": 5e-4, "prompt": 3e-2, "prefix": 1e-2, "p_tuning": 1e-2}


def split(args):
    import numpy as np

    from tuneline.data.conversations import read_bitext

    ex = read_bitext(args.data).examples
    order = np.random.default_rng(args.seed).permutation(len(ex))
    test = [ex[i] for i in order[:args.test]]
    train = [ex[i] for i in order[args.test:args.test + args.train]]
    assert not {e.source_row for e in test} & {e.source_row for e in train}
    return train, test


def worker(args) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneline.tasks.generation import prepare_gguf_model
    from tuneline.tasks.sft import GenerationEvalSettings, SFTSettings, evaluate_generation, fit_sft

    out = {"run": args.worker}
    try:
        folder = prepare_gguf_model(args.cache)
        tok = AutoTokenizer.from_pretrained(folder)
        torch.manual_seed(args.seed)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        train, test = split(args)
        if args.worker != "base":
            lr = LR[args.worker]
            s = SFTSettings(method=args.worker, batch_size=args.batch, max_length=args.max_length, epochs=args.epochs,
                            max_steps=args.max_steps or None, lr=lr, device="cpu", precision="fp32",
                            threads=args.threads)
            t0 = time.perf_counter()
            r = fit_sft(model, tok, train, [], s, seed=args.seed, tokenizer_dir=folder, progress=False)
            out.update(train_s=round(time.perf_counter() - t0, 1), lr=lr, steps=r.loop.steps,
                       trainable_pct=round(r.trainable_pct, 4), trainable_params=r.trainable_params,
                       first_loss=r.loop.curve[0]["loss"], final_loss=r.loop.curve[-1]["loss"],
                       train_tokens=r.train_tokens)
            model = r.model
        else:
            out.update(train_s=0.0, trainable_pct=0.0)
        model.eval()
        g = GenerationEvalSettings(max_length=args.max_length, max_new_tokens=args.max_new_tokens,
                                   batch_size=args.test, score_batch_size=4, n_bootstrap=args.n_bootstrap,
                                   seed=args.seed, samples=0)
        t0 = time.perf_counter()
        with torch.no_grad():
            e = evaluate_generation(model, tok, test, [], g)
        out["eval_s"] = round(time.perf_counter() - t0, 1)
        m = e.metrics
        out.update({k: m.get(k) for k in ("rougeL", "rouge1", "bleu", "chrf", "perplexity", "mean_words", "n_scored",
                                          "rejected")})
        out["ci"] = {k: m.get("ci", {}).get(k) for k in ("rougeL", "bleu", "chrf", "perplexity")}
        # no samples in the JSON: prompts and references are bitext rows, which are not ours to commit
    except Exception as exc:  # recorded in the table, not dropped
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()[-2000:]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(BITEXT))
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/tuneline"))
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--test", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--n-bootstrap", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-base", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--table", metavar="JSON", help="print the table of a (possibly partial) result file and exit")
    args = ap.parse_args()
    if args.table:
        data = json.loads(Path(args.table).read_text())
        meta = data.get("settings") or {k: v for k, v in vars(args).items() if k not in ("worker", "result", "table")}
        print(table(meta, data["results"], ["base", *METHODS]))
        return
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args)))
        return

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads)}
    runs_list = ([] if args.no_base else ["base"]) + args.methods.split(",")
    passthrough = ["--data", args.data, "--cache", args.cache, "--train", str(args.train), "--test", str(args.test),
                   "--batch", str(args.batch), "--max-length", str(args.max_length), "--epochs", str(args.epochs),
                   "--max-steps", str(args.max_steps), "--max-new-tokens", str(args.max_new_tokens),
                   "--n-bootstrap", str(args.n_bootstrap), "--threads", str(args.threads), "--seed", str(args.seed)]
    results: list[dict] = []
    t_all = time.perf_counter()
    for run in runs_list:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, __file__, "--worker", run, "--result", f.name, *passthrough],
                               env=env, cwd=ROOT)
            text = Path(f.name).read_text()
            r = json.loads(text) if text else {"run": run, "error": f"worker exited {p.returncode} with no result"}
        r["process_s"] = round(time.perf_counter() - t0, 1)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("samples", "traceback")}), flush=True)
        Path(args.out).write_text(json.dumps({"partial": True, "results": results}, indent=1))
    total = time.perf_counter() - t_all
    meta = {k: v for k, v in vars(args).items() if k not in ("worker", "result", "table")}
    meta.update(lr=LR, python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
                total_s=round(total, 1))
    Path(args.out).write_text(json.dumps({"settings": meta, "results": results}, indent=1))
    print(table(meta, results, runs_list))


def table(meta: dict, results: list[dict], runs_list: list[str]) -> str:
    """The markdown table of a run; runs in `runs_list` without a result are shown as not run."""
    base = next((r for r in results if r["run"] == "base" and "error" not in r), None)
    done = {r["run"] for r in results}
    rows = [f"SmolLM2-135M-Instruct, {meta['train']} train / {meta['test']} test bitext rows, batch {meta['batch']}, "
            f"max length {meta['max_length']}, {meta['epochs']:g} epoch, {meta['max_new_tokens']} new tokens, "
            f"{meta['threads']} threads ({meta.get('total_s', 0):.0f} s in all)",
            "| run | lr | trainable % | ROUGE-L [95% CI] | Δ ROUGE-L vs base | BLEU | chrF | perplexity | "
            "train s | eval s | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['run']} | {r.get('lr', '-')} | - | error: {r['error'][:120]} | - | - | - | - | - | - | "
                        f"{fmt(r.get('peak_rss_mb'), 0)} |")
            continue
        ci = r["ci"].get("rougeL") or {}
        ci_s = f" [{ci['low']:.1f}, {ci['high']:.1f}]" if ci else ""
        delta = "-" if base is None or r["run"] == "base" else f"{r['rougeL'] - base['rougeL']:+.1f}"
        rows.append(f"| {r['run']} | {r.get('lr', '-')} | {r['trainable_pct']:.3f} | {r['rougeL']:.1f}{ci_s} | "
                    f"{delta} | {fmt(r['bleu'])} | {fmt(r['chrf'])} | {fmt(r['perplexity'], 2)} | "
                    f"{r['train_s']:.0f} | {r['eval_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    rows += [f"| {m} | {LR.get(m, '-')} | not run | - | - | - | - | - | - | - | - |"
             for m in runs_list if m not in done]
    return "\n".join(rows)

if __name__ == "__main__":
    main()
