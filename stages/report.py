"""One page a reviewer reads: is the new model good, calibrated, fair across slices, better than the last?

Reads: reports/metrics/{collect,clean,validation,split,train,calibrate,evaluate}.json,
       reports/metrics/compress.json (when the compress stage ran), reports/metrics/gate.json (the
       promotion gate's decision, when it ran), reports/mistakes.json,
       reports/plots/train_{steps,val}.tsv, reports/plots/calibrate/reliability.png,
       reports/plots/evaluate/{confusion,curves,reliability}.png, and the baseline: the
       evaluate.json committed at git HEAD (the previous run), or report.baseline
Writes: reports/index.html (self-contained: inline CSS, figures as data URIs, no external
        references; opens offline), reports/report.md + reports/figures/*.png (the same
        content as Markdown), models/calibrated/README.md (the model card)
Params: base, paths, report      Run: dvc repro report   (or: python -m stages.report)

The comparison flags a headline metric as a regression when it is worse than the baseline by
more than report.regression_tolerance (absolute), and says whether the baseline value lies
outside the new 95% interval. The git baseline is not a DVC dependency: after a commit, run
`dvc repro -f report` (or any upstream change) to compare against the new HEAD.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pandas as pd

from tuneline.errors import UserError, run_main
from tuneline import figures
from tuneline.logs import setup_logging
from tuneline.metrics import LOWER_IS_BETTER
from tuneline.params import BaseParams, Paths, ReportParams, load_params
from tuneline.records import read_json, write_text
from tuneline.reporting import (
    Callout,
    Figure,
    Paragraph,
    Section,
    Table,
    fmt,
    render_html,
    render_markdown,
    write_figures,
)

log = logging.getLogger("tuneline.report")
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "ece": "ECE (15 bins)",
    "nll": "NLL (log loss)",
    "brier": "Brier score",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "ece_adaptive": "ECE (adaptive bins)",
    "mce": "MCE",
    "mean_confidence": "mean confidence",
}


class ReportError(UserError, ValueError):
    pass


# --------------------------------------------------------------------------- inputs
def _read(path: Path) -> dict | list | None:
    return read_json(path) if path.exists() else None


def _png(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def _tsv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t") if path.exists() else None


def git_baseline(path: Path) -> tuple[dict | None, str]:
    """The version of `path` committed at git HEAD, and a description of where it came from."""
    path = Path(path).resolve()
    try:
        show = subprocess.run(
            ["git", "-C", str(path.parent), "show", f"HEAD:./{path.name}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        rev = subprocess.run(
            ["git", "-C", str(path.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"git not available ({e})"
    if show.returncode != 0:
        return None, "no evaluate metrics committed at git HEAD (first run, or not a git repository)"
    try:
        return json.loads(show.stdout), f"git HEAD {rev.stdout.strip()}"
    except json.JSONDecodeError:
        return None, f"the evaluate.json at git HEAD {rev.stdout.strip()} is not valid JSON"


def load_baseline(p: ReportParams, evaluate_path: Path) -> tuple[dict | None, str]:
    if p.baseline:
        path = Path(p.baseline)
        if not path.exists():
            raise ReportError(
                f"report.baseline: {path} does not exist; set it to an evaluate.json or null "
                f"(null compares with the one committed at git HEAD)"
            )
        return read_json(path), f"baseline file {path}"
    return git_baseline(evaluate_path)


# --------------------------------------------------------------------------- helpers
def _ci_text(ev: dict, key: str) -> str:
    ci = (ev.get("ci") or {}).get(key)
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else "–"


def _worse(metric: str, delta: float) -> float:
    """How much worse a change is (positive = worse), whatever the metric's direction."""
    return delta if metric in LOWER_IS_BETTER else -delta


def compare(current: dict, baseline: dict, tolerance: float) -> list[dict]:
    """Headline and per-class F1 deltas against the baseline. A headline metric worse by more than
    `tolerance` is a regression; a class F1 worse by that much is only marked (`worse`)."""
    rows = []
    cur_h, base_h = current.get("headline", {}), baseline.get("headline", {})
    for key, value in cur_h.items():
        if key not in base_h or value is None or base_h[key] is None:
            continue
        delta = value - base_h[key]
        ci = (current.get("ci") or {}).get(key)
        outside = bool(ci and not (ci["low"] <= base_h[key] <= ci["high"]))
        rows.append(
            {
                "metric": METRIC_NAMES.get(key, key),
                "key": key,
                "current": value,
                "baseline": base_h[key],
                "delta": delta,
                "regression": _worse(key, delta) > tolerance,
                "improvement": _worse(key, delta) < -tolerance,
                "outside_ci": outside,
            }
        )
    for lab, pc in (current.get("per_class") or {}).items():
        old = (baseline.get("per_class") or {}).get(lab)
        if old and "f1" in old:
            delta = pc["f1"] - old["f1"]
            # per class: shown and marked, but not a regression of the run (small classes are noisy)
            rows.append(
                {
                    "metric": f"F1 of '{lab}'",
                    "key": f"f1:{lab}",
                    "current": pc["f1"],
                    "baseline": old["f1"],
                    "delta": delta,
                    "regression": False,
                    "worse": -delta > tolerance,
                    "improvement": delta > tolerance,
                    "outside_ci": None,
                }
            )
    return rows


# --------------------------------------------------------------------------- sections
def summary_section(ev: dict, cal: dict | None, comparison: list[dict] | None, baseline_note: str) -> Section:
    s = Section("summary", "Summary")
    model = ev.get("model", {})
    s.blocks.append(
        Paragraph(
            f"Model: {model.get('method', '?')} fine-tuning of {model.get('base', '?')}, calibrated with "
            f"{model.get('calibration', '?')}"
            + (f" (T = {model['temperature']:.3f})" if model.get("temperature") else "")
            + f". Test split: {ev['rows']:,} rows, labels {', '.join(ev.get('labels', []))}."
        )
    )
    level = ev.get("ci_level")
    rows = [[METRIC_NAMES.get(k, k), v, _ci_text(ev, k)] for k, v in ev["headline"].items()]
    s.blocks.append(
        Table(
            ["metric (test, calibrated)", "value", f"{round((level or 0.95) * 100)}% CI"],
            rows,
            caption="Headline metrics; intervals are percentile bootstrap over test rows"
            + (f" ({ev.get('n_bootstrap')} resamples)" if ev.get("n_bootstrap") else ""),
        )
    )
    if comparison is None:
        s.blocks.append(Callout(f"No previous run to compare with: {baseline_note}.", "warn"))
    else:
        bad = [r["metric"] for r in comparison if r["regression"]]
        if bad:
            s.blocks.append(
                Callout(
                    f"Regressions against the previous run ({baseline_note}): {', '.join(bad)}. "
                    "See 'Comparison with the previous run'.",
                    "bad",
                )
            )
        else:
            s.blocks.append(Callout(f"No regression against the previous run ({baseline_note}).", "good"))
    if cal and cal.get("temperature_at_bound"):
        s.blocks.append(
            Callout(
                "The temperature fit ended on its search bound: the val split may be too small "
                "or separated perfectly; treat the calibration with care.",
                "warn",
            )
        )
    return s


def data_section(collect: dict | None, clean: dict | None, validation: dict | None, split: dict | None) -> Section:
    s = Section("data", "Data")
    if collect:
        rows = [
            ["rows read", collect.get("rows_read")],
            ["exact duplicates dropped", collect.get("duplicates")],
            ["rows rejected (unreadable, unknown label)", collect.get("rows_rejected")],
            ["records collected", collect.get("rows_out")],
        ]
        s.blocks.append(Table(["collect", "rows"], rows, caption="Collected"))
        sources = collect.get("sources") or {}
        if sources:
            cols = sorted({k for v in sources.values() for k in v})
            s.blocks.append(
                Table(
                    ["source"] + cols,
                    [[name] + [v.get(c) for c in cols] for name, v in sources.items()],
                    caption="Per source",
                )
            )
        if collect.get("labels"):
            s.blocks.append(
                Table(["label", "rows"], [[k, v] for k, v in collect["labels"].items()], caption="Labels as collected")
            )
    else:
        s.blocks.append(Paragraph("collect metrics not found.", note=True))
    if clean:
        scalars = [
            [k.replace("_", " "), v]
            for k, v in clean.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if scalars:
            s.blocks.append(Table(["clean", "value"], scalars, caption="Cleaned (normalized and anonymized)"))
        for key, value in clean.items():
            if isinstance(value, dict):
                flat = _flatten(value)
                if flat:
                    caption = {
                        "pii": "Personal data (presidio): settings, then replacements per entity type",
                        "rejected": "Rejected rows, per reason",
                        "reasons": "Rejected rows, per reason",
                    }.get(key, key.replace("_", " "))
                    s.blocks.append(
                        Table([key.replace("_", " "), "value" if key == "pii" else "count"],
                              [[k, v] for k, v in flat.items()], caption=caption)
                    )
    else:
        s.blocks.append(Paragraph("clean metrics not found.", note=True))
    if validation:
        exp = validation.get("expectations", {})
        tone = "good" if validation.get("success") else "bad"
        s.blocks.append(
            Callout(
                f"Validation {'passed' if validation.get('success') else 'FAILED'}: {exp.get('passed', '?')} of "
                f"{exp.get('evaluated', '?')} expectations met on {validation.get('rows', '?'):,} rows"
                + (f"; failed: {', '.join(validation.get('failed', []))}" if validation.get("failed") else "")
                + " (full report: validation.html).",
                tone,
            )
        )
        checks = validation.get("checks") or []
        if checks:
            s.blocks.append(
                Table(
                    ["check", "column", "result", "unexpected rows", "description"],
                    [
                        [
                            c.get("name"),
                            c.get("column") or "",
                            "pass" if c.get("success") else "FAIL",
                            c.get("unexpected_count"),
                            c.get("description", ""),
                        ]
                        for c in checks
                    ],
                    caption="Expectations (great-expectations)",
                    tones=[None if c.get("success") else "bad" for c in checks],
                )
            )
    else:
        s.blocks.append(Paragraph("validation metrics not found.", note=True))
    if split:
        sp = split.get("splits", {})
        labels = sorted({lab for v in sp.values() for lab in (v.get("labels") or {})})
        rows = [
            [name, v.get("rows"), v.get("fraction")] + [(v.get("labels") or {}).get(lab) for lab in labels]
            for name, v in sp.items()
        ]
        s.blocks.append(
            Table(
                ["split", "rows", "fraction"] + labels,
                rows,
                caption="Splits (no text shared between splits: "
                f"{split.get('shared_texts_between_splits', '?')} shared)",
            )
        )
    return s


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + " / "))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def training_section(train: dict | None, steps: pd.DataFrame | None, evals: pd.DataFrame | None) -> Section:
    s = Section("training", "Training")
    if not train:
        s.blocks.append(Paragraph("train metrics not found.", note=True))
        return s
    keys = [
        ("method", "method"),
        ("base", "base model"),
        ("device", "device"),
        ("precision", "precision"),
        ("trainable_params", "trainable parameters"),
        ("total_params", "total parameters"),
        ("trainable_pct", "trainable %"),
        ("train_rows", "train rows"),
        ("val_rows", "val rows"),
        ("max_length", "max length (tokens)"),
        ("steps", "steps"),
        ("epochs_run", "epochs run"),
        ("best_step", "best step (weights kept)"),
        ("stopped_early", "stopped early"),
        ("train_seconds", "train time (s)"),
        ("samples_per_s", "samples / s"),
    ]
    s.blocks.append(
        Table(["", "value"], [[name, train.get(k)] for k, name in keys if k in train], caption="Method and run")
    )
    val = train.get("val") or {}
    if val:
        s.blocks.append(
            Paragraph(
                "Best validation evaluation: "
                + ", ".join(f"{k} {fmt(v)}" for k, v in val.items() if isinstance(v, (int, float)))
            )
        )
    if steps is not None and len(steps):
        series = {"train loss (per step)": (steps["step"].tolist(), steps["loss"].tolist())}
        if evals is not None and "loss" in evals:
            series["val loss"] = (evals["step"].tolist(), evals["loss"].tolist())
        s.blocks.append(
            Figure(
                "training_loss",
                figures.line_chart(series, "step", "cross-entropy loss", "Training curves"),
                "Loss per optimizer step",
            )
        )
    if evals is not None and len(evals):
        series = {c: (evals["step"].tolist(), evals[c].tolist()) for c in ("accuracy", "f1_macro") if c in evals}
        if series:
            s.blocks.append(
                Figure(
                    "training_val",
                    figures.line_chart(series, "step", "score", "Validation during training"),
                    "Validation accuracy and macro F1 at each evaluation",
                )
            )
    return s


def metrics_section(ev: dict, curves_png: bytes | None) -> Section:
    s = Section("metrics", "Test metrics")
    level = round((ev.get("ci_level") or 0.95) * 100)
    rows = [[METRIC_NAMES.get(k, k), v, _ci_text(ev, k)] for k, v in ev["headline"].items()]
    rows += [
        ["macro precision", ev["macro"]["precision"], "–"],
        ["macro recall", ev["macro"]["recall"], "–"],
        ["weighted F1", ev.get("weighted_f1"), "–"],
    ]
    s.blocks.append(
        Table(
            ["metric", "value", f"{level}% CI"],
            rows,
            caption=f"Calibrated model on the test split ({ev['rows']:,} rows)",
        )
    )
    pc = ev.get("per_class", {})
    s.blocks.append(
        Table(
            ["class", "precision", "recall", "F1", "support"],
            [[lab, v["precision"], v["recall"], v["f1"], v["support"]] for lab, v in pc.items()],
            caption="Per class",
        )
    )
    if curves_png:
        s.blocks.append(
            Figure(
                "curves",
                curves_png,
                "ROC and precision-recall curves on the test split"
                + (
                    f" (positive class '{ev['positive_label']}')"
                    if ev.get("positive_label")
                    else " (micro-averaged one-vs-rest)"
                ),
            )
        )
    return s


def calibration_section(cal: dict | None, ev: dict, val_png: bytes | None, test_png: bytes | None) -> Section:
    s = Section("calibration", "Calibration")
    keys = ("ece", "ece_adaptive", "mce", "brier", "nll", "accuracy")
    rows, tones = [], []
    c = ev.get("calibration", {})
    if cal:
        s.blocks.append(
            Paragraph(
                f"Method: {cal['method']}"
                + (f", fitted temperature T = {cal['temperature']:.4f}" if cal.get("temperature") else "")
                + f", fitted on the val split ({cal['rows']:,} rows) only. ECE uses {cal['n_bins']} equal-width bins; "
                "adaptive ECE uses bins of equal size."
            )
        )
    for k in keys:
        row = [METRIC_NAMES.get(k, k)]
        if cal:
            row += [cal["before"].get(k), cal["after"].get(k)]
        row += [c.get("uncalibrated", {}).get(k), c.get("calibrated", {}).get(k)]
        rows.append(row)
        before, after = c.get("uncalibrated", {}).get(k), c.get("calibrated", {}).get(k)
        # flag the proper scores (and ECE); MCE rests on one bin and is too noisy to flag
        tones.append(
            None
            if k not in ("ece", "brier", "nll") or before is None or after is None
            else ("bad" if _worse(k, after - before) > 1e-9 else None)
        )
    cols = ["metric"] + (["val before", "val after"] if cal else []) + ["test before", "test after"]
    s.blocks.append(
        Table(
            cols,
            rows,
            caption="Before = softmax of the logits; after = calibrated. Test numbers are "
            "held out from the fit; rows where calibration made the test split worse are highlighted.",
            tones=tones,
        )
    )
    if test_png:
        s.blocks.append(Figure("reliability_test", test_png, "Reliability diagram on the test split (held out)"))
    if val_png:
        s.blocks.append(Figure("reliability_val", val_png, "Reliability diagram on the val split (the fitting data)"))
    return s


def confusion_section(ev: dict, png: bytes | None, confusion_csv: Path) -> Section:
    s = Section("confusion", "Confusion matrix")
    if png:
        s.blocks.append(Figure("confusion", png, "Rows: true class; columns: predicted class (test split)"))
    labels = ev.get("labels", [])
    if confusion_csv.exists() and len(labels) <= 12:
        df = pd.read_csv(confusion_csv)
        cm = pd.crosstab(df["actual"], df["predicted"]).reindex(index=labels, columns=labels, fill_value=0)
        s.blocks.append(
            Table(
                ["true \\ predicted"] + labels,
                [[lab] + [int(x) for x in cm.loc[lab]] for lab in labels],
                caption="Counts",
            )
        )
    return s


def slices_section(ev: dict) -> Section:
    s = Section("slices", "Slices")
    ci_low = (ev.get("ci") or {}).get("accuracy", {}).get("low")
    s.blocks.append(
        Paragraph(
            "Metrics per group of test rows. A slice is highlighted red when its accuracy is below the lower bound "
            "of the overall accuracy's confidence interval, yellow when it has too few rows to judge. Macro F1 "
            "averages the classes present in the slice.",
            note=True,
        )
    )
    names = {"length": "Text length (characters)", "source": "Source dataset", "pii_replaced": "Personal data replaced"}
    for group, values in (ev.get("slices") or {}).items():
        rows, tones = [], []
        for value, m in values.items():
            rows.append([value, m["rows"], m["accuracy"], m["macro_f1"], m["ece"], m["nll"]])
            tones.append(
                "warn" if m.get("small") else ("bad" if ci_low is not None and m["accuracy"] < ci_low else None)
            )
        s.blocks.append(
            Table(
                [names.get(group, group), "rows", "accuracy", "macro F1", "ECE", "NLL"],
                rows,
                caption=names.get(group, group),
                tones=tones,
            )
        )
    return s


def mistakes_section(mistakes: list | None) -> Section:
    s = Section("mistakes", "Most confident mistakes")
    if not mistakes:
        s.blocks.append(
            Paragraph("No mistakes on the test split." if mistakes == [] else "mistakes.json not found.", note=True)
        )
        return s
    s.blocks.append(
        Paragraph(
            "Wrong predictions the calibrated model was surest of. Texts are the anonymized "
            "text from the clean stage (personal data replaced by <TYPE> tokens).",
            note=True,
        )
    )
    s.blocks.append(
        Table(
            ["confidence", "true", "predicted", "source", "id", "text"],
            [
                [
                    m["confidence"],
                    m["label"],
                    m["predicted"],
                    m.get("source"),
                    m.get("id"),
                    m["text"] if m.get("text") is not None else "(withheld: not anonymized)",
                ]
                for m in mistakes
            ],
            text_columns=(5,),
        )
    )
    return s


COMPRESS_COLUMNS = (
    "name",
    "kind",
    "source",
    "macro_f1",
    "accuracy",
    "ece",
    "size_mb",
    "params",
    "sparsity",
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_b32",
    "speedup_vs_teacher",
    "size_ratio_vs_teacher",
    "skipped",
)


def compression_section(compress: dict) -> Section:
    """The compress stage's variants (teacher first), its targets, and a quality-vs-cost chart."""
    s = Section("compression", "Compression")
    variants = compress.get("variants") if isinstance(compress, dict) else None
    if isinstance(variants, dict):
        variants = [{"name": k, **v} for k, v in variants.items()]
    rows = ([compress["teacher"]] if isinstance(compress.get("teacher"), dict) else []) + list(variants or [])
    if not rows:
        s.blocks.append(Paragraph("compress.json has no variants.", note=True))
        return s
    cols = [c for c in COMPRESS_COLUMNS if any(c in r for r in rows)]
    if len(cols) <= 1:  # an unfamiliar layout: every scalar column
        cols = []
        for r in rows:
            cols += [k for k, x in r.items() if k not in cols and (isinstance(x, (int, float, str)) or x is None)]
    s.blocks.append(
        Table(
            cols,
            [[r.get(c) for c in cols] for r in rows],
            caption="Variants, measured on the test split",
            tones=["warn" if r.get("skipped") else None for r in rows],
        )
    )
    targets = compress.get("targets") or []
    if targets and all(isinstance(t, dict) for t in targets):
        tcols = []
        for t in targets:
            tcols += [
                k for k, x in t.items() if k not in tcols and (isinstance(x, (int, float, str, bool)) or x is None)
            ]
        s.blocks.append(
            Table(
                tcols,
                [[t.get(c) for c in tcols] for t in targets],
                caption="Targets",
                tones=[None if t.get("met", True) else "bad" for t in targets],
            )
        )
    note = (compress.get("conditions") or {}).get("shared_machine_note")
    if note:
        s.blocks.append(Paragraph(f"Timing conditions: {note}.", note=True))
    quality = next((k for k in ("macro_f1", "f1_macro", "accuracy") if k in cols), None)
    measured = [r for r in rows if not r.get("skipped")]
    xs = [c for c in ("size_mb", "latency_ms_p50", "throughput_b32") if c in cols]
    if not xs:
        xs = [c for c in cols if c == "params" or "p50" in c][:2]
    if quality and xs and measured:
        s.blocks.append(
            Figure(
                "compression",
                figures.tradeoff_chart(measured, quality, xs, f"{quality} against size and speed"),
                "Each point is one variant (the teacher is the uncompressed model)",
            )
        )
    return s


def gate_section(gate: dict) -> Section:
    """The gate stage's champion/challenger decision, its checks, and both models on old and new data."""
    s = Section("gate", "Promotion gate")
    d = gate.get("decision") or {}
    prod = gate.get("production") or {}
    verdict = (
        "passes the gate: the retraining flow promotes it"
        if d.get("promote")
        else f"is rejected: production stays {prod.get('version') or '(none)'}"
    )
    s.blocks.append(
        Callout(f"The candidate {verdict}. {d.get('summary', '')}", tone="good" if d.get("promote") else "bad")
    )
    checks = d.get("checks") or []
    s.blocks.append(
        Table(
            ["check", "passed", "detail"],
            [[c["name"], c["passed"], c["detail"]] for c in checks],
            tones=[None if c["passed"] else "bad" for c in checks],
            text_columns=(2,),
        )
    )
    rows = []
    for who, m in (("candidate", gate.get("candidate")), (f"production {prod.get('version')}", gate.get("production"))):
        for part, label in (
            ("test", "test split (current data)"),
            ("regression", "regression set (old data)"),
            ("feedback", "feedback rows of the test split (new data)"),
        ):
            x = (m or {}).get(part)
            if x:
                rows.append([who, label, x.get("n"), x.get("accuracy"), x.get("macro_f1"), x.get("ece"), x.get("nll")])
    if rows:
        s.blocks.append(
            Table(
                ["model", "data", "rows", "accuracy", "macro F1", "ECE", "NLL"],
                rows,
                caption="Each model is scored only on rows it did not train on",
            )
        )
    return s


def comparison_section(
    comparison: list[dict] | None, baseline: dict | None, baseline_note: str, ev: dict, tolerance: float
) -> Section:
    s = Section("comparison", "Comparison with the previous run")
    if comparison is None:
        s.blocks.append(Paragraph(f"No previous run: {baseline_note}.", note=True))
        return s
    s.blocks.append(
        Paragraph(
            f"Baseline: {baseline_note}. A headline metric worse by more than {tolerance} "
            "(absolute) is a regression (red); a class whose F1 dropped that much is yellow (small "
            "classes are noisy); better by more than that is green. 'outside CI' means the baseline "
            "value lies outside this run's confidence interval.",
            note=True,
        )
    )
    if baseline and baseline.get("rows") != ev.get("rows"):
        s.blocks.append(
            Callout(
                f"The baseline was measured on {baseline.get('rows')} test rows, this run on "
                f"{ev.get('rows')}: the test split changed, so differences mix model and data.",
                "warn",
            )
        )
    s.blocks.append(
        Table(
            ["metric", "this run", "baseline", "change", "outside CI"],
            [[r["metric"], r["current"], r["baseline"], f"{r['delta']:+.4f}", r["outside_ci"]] for r in comparison],
            tones=[
                "bad" if r["regression"] else "warn" if r.get("worse") else ("good" if r["improvement"] else None)
                for r in comparison
            ],
        )
    )
    return s


# --------------------------------------------------------------------------- model card
def model_card(
    ev: dict,
    train: dict | None,
    cal: dict | None,
    collect: dict | None,
    split: dict | None,
    comparison: list[dict] | None,
) -> str:
    labels = ev.get("labels", [])
    model = ev.get("model", {})
    h = ev["headline"]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "language: [en]",
        "tags: [tuneline, calibrated]",
        "---",
        "",
        f"# Calibrated text classifier ({', '.join(labels)})",
        "",
        "Generated by the tuneline `report` stage from the pipeline's metrics; do not edit by hand.",
        "",
        "## Model",
        "",
        f"- Base model: {model.get('base', '?')}; fine-tuning method: {model.get('method', '?')}"
        + (
            f" ({train['trainable_params']:,} of {train['total_params']:,} parameters trained)"
            if train and "trainable_params" in train
            else ""
        ),
        f"- Labels (class-id order): {', '.join(labels)}",
        f"- Calibration: {model.get('calibration', '?')}"
        + (" scaling" if model.get("calibration") in ("temperature", "vector") else "")
        + (f" (T = {model['temperature']:.4f})" if model.get("temperature") else "")
        + ", fitted on the validation split (`calibrator.json`, plain JSON).",
        (
            "- Files: `model.json` points at the fine-tuned model folder (with its sha256); "
            "load both with `tuneline.predictor.Predictor.load(<models dir>, ...)` or "
            "`tuneline.calibration.load_calibrated` + `tuneline.models.load_finetuned`."
        ),
        "",
        "## Intended use",
        "",
        (
            f"Sorting short English texts into {', '.join(labels)}, as a decision aid whose calibrated probability "
            "can be thresholded (e.g. send low-confidence texts to a person). Out of scope: other languages, texts "
            "much longer than the training data, label sets other than the one above, and any decision about a "
            "person made without human review."
        ),
        "",
        "## Data",
        "",
    ]
    if collect:
        sources = [
            name
            for name, v in (collect.get("sources") or {}).items()
            if not isinstance(v, dict) or v.get("rows_kept", 1)
        ]
        lines.append(f"- {collect.get('rows_out', '?'):,} records collected from: " + (", ".join(sources) or "?") + ".")
    if split:
        lines.append(
            "- Splits: "
            + ", ".join(f"{k} {v.get('rows', '?'):,}" for k, v in split.get("splits", {}).items())
            + "; identical texts never cross splits."
        )
    lines += [
        (
            "- Personal data (names, phone numbers, e-mail addresses, ...) was replaced by type tokens "
            "before training (presidio); see the limitations."
        ),
        "",
        "## Evaluation (test split, calibrated)",
        "",
        f"| metric | value | {round((ev.get('ci_level') or 0.95) * 100)}% CI |",
        "|---|---:|---|",
    ]
    lines += [f"| {METRIC_NAMES.get(k, k)} | {fmt(v)} | {_ci_text(ev, k)} |" for k, v in h.items()]
    c = ev.get("calibration", {})
    if c:
        lines += [
            "",
            (
                f"Calibration on the test split: ECE {fmt(c['uncalibrated']['ece'])} before, "
                f"{fmt(c['calibrated']['ece'])} after; NLL {fmt(c['uncalibrated']['nll'])} before, "
                f"{fmt(c['calibrated']['nll'])} after."
            ),
        ]
    if comparison:
        bad = [r["metric"] for r in comparison if r["regression"]]
        lines += [
            "",
            "Against the previous run: " + ("regressions in " + ", ".join(bad) if bad else "no regression") + ".",
        ]
    weak = []
    ci_low = (ev.get("ci") or {}).get("accuracy", {}).get("low")
    for group, values in (ev.get("slices") or {}).items():
        for value, m in values.items():
            if ci_low is not None and not m.get("small") and m["accuracy"] < ci_low:
                weak.append(f"{group} = {value} (accuracy {m['accuracy']:.3f}, {m['rows']} rows)")
    lines += [
        "",
        "## Limitations",
        "",
        (
            "- Metrics come from one test split of the same sources as the training data; new sources, new "
            "phrasing or a shift in label frequencies will lower them, and calibration is only as good as the "
            "validation split it was fitted on."
        ),
        "- Weaker slices: " + ("; ".join(weak) if weak else "none below the overall accuracy interval") + ".",
        (
            "- Anonymization is automatic and imperfect: some personal data may remain in training texts, and "
            "type tokens (e.g. <PHONE_NUMBER>) are themselves a signal the model may lean on."
        ),
        (
            "- See the full report (reports/index.html) for the slices, the most confident mistakes and the "
            "reliability diagrams."
        ),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- stage
def run(p: ReportParams, base: BaseParams, paths: Paths) -> dict:
    metrics, plots, reports = Path(paths.metrics), Path(paths.plots), Path(paths.reports)
    ev = _read(metrics / "evaluate.json")
    if ev is None:
        raise ReportError(f"{metrics / 'evaluate.json'}: missing; run the evaluate stage (dvc repro evaluate)")
    if ev.get("labels") and list(ev["labels"]) != list(base.labels):
        raise ReportError(
            f"evaluate.json is for labels {ev['labels']} but base.labels is {base.labels}; "
            "rerun the pipeline (dvc repro)"
        )
    collect, clean, validation, split = (
        _read(metrics / f"{n}.json") for n in ("collect", "clean", "validation", "split")
    )
    train, cal, compress = (_read(metrics / f"{n}.json") for n in ("train", "calibrate", "compress"))
    baseline, baseline_note = load_baseline(p, metrics / "evaluate.json")
    comparison = compare(ev, baseline, p.regression_tolerance) if baseline else None

    sections = [
        summary_section(ev, cal, comparison, baseline_note),
        data_section(collect, clean, validation, split),
        training_section(train, _tsv(plots / "train_steps.tsv"), _tsv(plots / "train_val.tsv")),
        metrics_section(ev, _png(plots / "evaluate" / "curves.png")),
        calibration_section(
            cal, ev, _png(plots / "calibrate" / "reliability.png"), _png(plots / "evaluate" / "reliability.png")
        ),
        confusion_section(ev, _png(plots / "evaluate" / "confusion.png"), plots / "evaluate" / "confusion.csv"),
        slices_section(ev),
        mistakes_section(_read(reports / "mistakes.json")),
    ]
    if compress:
        sections.append(compression_section(compress))
    gate = _read(metrics / "gate.json")
    if gate:
        sections.insert(1, gate_section(gate))
    sections.append(comparison_section(comparison, baseline, baseline_note, ev, p.regression_tolerance))

    subtitle = (
        f"{ev.get('model', {}).get('method', '?')} fine-tuning of {ev.get('model', {}).get('base', '?')}; "
        f"test split {ev['rows']:,} rows"
    )
    figure_dir = reports / "figures"
    written = {f.name for f in write_figures(sections, figure_dir)}
    for stale in figure_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    write_text(render_html(p.title, sections, subtitle), reports / "index.html")
    write_text(render_markdown(p.title, sections, subtitle, figure_dir="figures"), reports / "report.md")
    write_text(model_card(ev, train, cal, collect, split, comparison), Path(paths.models) / "calibrated" / "README.md")
    regressions = [r["metric"] for r in comparison or [] if r["regression"]]
    log.info(
        "report: %d sections -> %s, %s, model card; baseline: %s; %s",
        len(sections),
        reports / "index.html",
        reports / "report.md",
        baseline_note,
        f"REGRESSIONS: {', '.join(regressions)}" if regressions else "no regressions",
    )
    return {"sections": [s.id for s in sections], "regressions": regressions, "baseline": baseline_note}


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.report, params.base, params.paths)


if __name__ == "__main__":
    run_main(main)
