"""The review report: what it reads (`INPUTS`, `read_inputs`) and one small function per section.

Each section reads the upstream files in the shapes their stages write them (stages/*.py
`write_json`); a renamed key is a KeyError here, not a silently empty table. A missing upstream
file (a stage that did not run) gives its section a red "not available" callout naming the file
and the command that writes it, never zeros. `build_sections` puts them in reading order; the
report stage renders them with `tuneline.evaluate.document`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tuneline.evaluate import figures
from tuneline.evaluate.baseline import worse_by
from tuneline.evaluate.document import Callout, Figure, Paragraph, Section, Table, fmt
from tuneline.params import Paths
from tuneline.data.records import read_json

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

# name: (Paths field, file under it, the stage that writes it). dvc.yaml's report deps list exactly these.
INPUTS = {
    "collect": ("metrics", "collect.json", "collect"),
    "clean": ("metrics", "clean.json", "clean"),
    "validation": ("metrics", "validation.json", "validate"),
    "split": ("metrics", "split.json", "split"),
    "train": ("metrics", "train.json", "train"),
    "train_steps": ("plots", "train_steps.tsv", "train"),
    "train_val": ("plots", "train_val.tsv", "train"),
    "calibrate": ("metrics", "calibrate.json", "calibrate"),
    "calibrate_reliability": ("plots", "calibrate/reliability.png", "calibrate"),
    "evaluate": ("metrics", "evaluate.json", "evaluate"),
    "mistakes": ("reports", "mistakes.json", "evaluate"),
    "confusion": ("plots", "evaluate/confusion.csv", "evaluate"),
    "confusion_png": ("plots", "evaluate/confusion.png", "evaluate"),
    "curves_png": ("plots", "evaluate/curves.png", "evaluate"),
    "evaluate_reliability": ("plots", "evaluate/reliability.png", "evaluate"),
    "compress": ("metrics", "compress.json", "compress"),
    "compress_tradeoff": ("plots", "compress/tradeoff.png", "compress"),
    "gate": ("metrics", "gate.json", "gate"),
}


def input_path(paths: Paths, name: str) -> Path:
    where, rel, _ = INPUTS[name]
    return Path(getattr(paths, where)) / rel


@dataclass
class Inputs:
    """Every upstream file, parsed (JSON as dict/list, TSV/CSV as DataFrame, PNG as bytes): `inp.<name>`
    for each name in INPUTS, None when the file is missing; `missing` maps those names to
    '<path> is missing (run: dvc repro <stage>)'."""

    data: dict[str, object]
    missing: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str):
        if name not in INPUTS:
            raise AttributeError(name)
        return self.data.get(name)

    def absent(self, *names: str) -> Callout:
        """The red callout of a section (or part of one) whose input files are missing."""
        what = "; ".join(self.missing[n] for n in names if n in self.missing)
        return Callout(f"Not available: {what}.", "bad")


def read_inputs(paths: Paths) -> Inputs:
    data, missing = {}, {}
    for name, (_, _, stage) in INPUTS.items():
        path = input_path(paths, name)
        if not path.exists():
            missing[name] = f"{path} is missing (run: dvc repro {stage})"
        elif path.suffix == ".json":
            data[name] = read_json(path)
        elif path.suffix == ".png":
            data[name] = path.read_bytes()
        else:
            data[name] = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    return Inputs(data, missing)


# --------------------------------------------------------------------------- shared pieces
def metric_name(key: str) -> str:
    """Display name of a headline key or a comparison key (`f1:<label>`)."""
    if key.startswith("f1:"):
        return f"F1 of '{key[3:]}'"
    return METRIC_NAMES.get(key, key)


def ci_text(ev: dict, key: str) -> str:
    ci = ev["ci"].get(key)
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else "–"


def ci_header(ev: dict) -> str:
    return f"{round(ev['ci_level'] * 100)}% CI" if ev["ci_level"] else "CI (none: evaluate.n_bootstrap is 0)"


def weak_slices(ev: dict) -> list[tuple[str, str, dict]]:
    """(group, value, scores) of the slices whose accuracy is below the lower bound of the overall
    accuracy's interval (slices too small to judge are left out)."""
    low = ev["ci"].get("accuracy", {}).get("low")
    if low is None:
        return []
    return [(g, v, m) for g, values in ev["slices"].items() for v, m in values.items()
            if not m["small"] and m["accuracy"] < low]


def _figure(inp: Inputs, name: str, figure_name: str, caption: str) -> Figure | Callout:
    png = getattr(inp, name)
    return Figure(figure_name, png, caption) if png is not None else inp.absent(name)


# --------------------------------------------------------------------------- sections
def summary_section(inp: Inputs, comparison: list[dict] | None, baseline_note: str) -> Section:
    ev, s = inp.evaluate, Section("summary", "Summary")
    model = ev["model"]
    s.blocks.append(Paragraph(
        f"Model: {model['method']} fine-tuning of {model['base']}, calibrated with {model['calibration']}"
        + (f" (T = {model['temperature']:.3f})" if model["temperature"] is not None else "")
        + f". Test split: {ev['rows']:,} rows, labels {', '.join(ev['labels'])}."))
    s.blocks.append(Table(
        ["metric (test, calibrated)", "value", ci_header(ev)],
        [[metric_name(k), v, ci_text(ev, k)] for k, v in ev["headline"].items()],
        caption="Headline metrics; intervals are percentile bootstrap over test rows"
        + (f" ({ev['n_bootstrap']} resamples)" if ev["n_bootstrap"] else "")))
    if comparison is None:
        s.blocks.append(Callout(f"No previous run to compare with: {baseline_note}.", "warn"))
    elif bad := [metric_name(r["key"]) for r in comparison if r["regression"]]:
        s.blocks.append(Callout(f"Regressions against the previous run ({baseline_note}): {', '.join(bad)}. "
                                "See 'Comparison with the previous run'.", "bad"))
    else:
        s.blocks.append(Callout(f"No regression against the previous run ({baseline_note}).", "good"))
    if inp.missing:
        n = len(inp.missing)
        s.blocks.append(Callout(f"Incomplete report: {n} upstream file{'s' * (n > 1)} missing "
                                f"({', '.join(inp.missing)}); each is named in its section.", "bad"))
    if inp.calibrate and inp.calibrate["temperature_at_bound"]:
        s.blocks.append(Callout("The temperature fit ended on its search bound: the val split may be too small "
                                "or separated perfectly; treat the calibration with care.", "warn"))
    return s


def gate_section(gate: dict) -> Section:
    """The gate stage's champion/challenger decision, its checks, and both models on old and new data."""
    s = Section("gate", "Promotion gate")
    d, prod = gate["decision"], gate["production"]
    verdict = ("passes the gate: the retraining flow promotes it" if d["promote"]
               else f"is rejected: production stays {prod['version'] if prod else '(none)'}")
    s.blocks.append(Callout(f"The candidate {verdict}. {d['summary']}", "good" if d["promote"] else "bad"))
    s.blocks.append(Table(["check", "passed", "detail"], [[c["name"], c["passed"], c["detail"]] for c in d["checks"]],
                          tones=[None if c["passed"] else "bad" for c in d["checks"]], text_columns=(2,)))
    rows = []
    for who, m in (("candidate", gate["candidate"]), (f"production {prod['version'] if prod else None}", prod)):
        for part, label in (("test", "test split (current data)"), ("regression", "regression set (old data)"),
                            ("feedback", "feedback rows of the test split (new data)")):
            x = m[part] if m else None  # None: no production model yet, or no rows of that kind
            if x:
                rows.append([who, label, x["n"], x["accuracy"], x["macro_f1"], x["ece"], x["nll"]])
    if rows:
        s.blocks.append(Table(["model", "data", "rows", "accuracy", "macro F1", "ECE", "NLL"], rows,
                              caption="Each model is scored only on rows it did not train on"))
    return s


def data_section(inp: Inputs) -> Section:
    s = Section("data", "Data")
    s.blocks += _collect_blocks(inp.collect) if inp.collect else [inp.absent("collect")]
    s.blocks += _clean_blocks(inp.clean) if inp.clean else [inp.absent("clean")]
    s.blocks += _validation_blocks(inp.validation) if inp.validation else [inp.absent("validation")]
    s.blocks += _split_blocks(inp.split) if inp.split else [inp.absent("split")]
    return s


def _collect_blocks(c: dict) -> list:
    out = [Table(["collect", "rows"], [["rows read", c["rows_read"]], ["exact duplicates dropped", c["duplicates"]],
                                       ["rows rejected (unreadable, unknown label)", c["rows_rejected"]],
                                       ["records collected", c["rows_out"]]], caption="Collected")]
    out.append(Table(
        ["dataset", "source", "rows read", "rows kept", "duplicates", "rows rejected"],
        [[name, v["source"], v["rows_read"], v["rows_kept"], v["duplicates"], v["rows_rejected"]]
         for name, v in c["sources"].items()], caption="Per source"))
    out.append(Table(["label", "rows"], [[k, v] for k, v in c["labels"].items()], caption="Labels as collected"))
    return out


def _clean_blocks(c: dict) -> list:
    out = [Table(["clean", "value"], [["rows in", c["rows_in"]], ["rows out", c["rows_out"]],
                                      ["rows rejected", c["rows_rejected"]],
                                      ["rows changed by cleaning", c["rows_changed_by_cleaning"]]],
                 caption="Cleaned (normalized and anonymized)")]
    if c["rejected"]:
        out.append(Table(["rejected", "count"], [[k, v] for k, v in c["rejected"].items()],
                         caption="Rejected rows, per reason"))
    pii = c["pii"]
    rows = [["score_threshold", pii["score_threshold"]], ["operator", pii["operator"]],
            ["spacy_model", pii["spacy_model"]], ["rows_with_pii", pii["rows_with_pii"]],
            ["entities_replaced", pii["entities_replaced"]]]
    rows += [[f"by_entity / {k}", v] for k, v in pii["by_entity"].items()]
    rows += [[f"by_safety_net / {k}", v] for k, v in pii["by_safety_net"].items()]
    out.append(Table(["pii", "value"], rows,
                     caption="Personal data (presidio): settings, then replacements per entity type"))
    out.append(Table(["label", "rows"], [[k, v] for k, v in c["labels"].items()], caption="Labels after cleaning"))
    return out


def _validation_blocks(v: dict) -> list:
    exp = v["expectations"]
    checks = v["checks"]
    return [
        Callout(f"Validation {'passed' if v['success'] else 'FAILED'}: {exp['passed']} of {exp['evaluated']} "
                f"expectations met on {v['rows']:,} rows"
                + (f"; failed: {', '.join(v['failed'])}" if v["failed"] else "") + " (full report: validation.html).",
                "good" if v["success"] else "bad"),
        Table(["check", "column", "result", "unexpected rows", "description"],
              [[c["name"], c["column"] or "", "pass" if c["success"] else "FAIL", c["unexpected_count"],
                c["description"]] for c in checks],
              caption="Expectations (great-expectations)", tones=[None if c["success"] else "bad" for c in checks]),
    ]


def _split_blocks(sp: dict) -> list:
    splits = sp["splits"]
    labels = list(next(iter(splits.values()))["labels"])
    return [Table(["split", "rows", "fraction", *labels],
                  [[name, v["rows"], v["fraction"], *(v["labels"][lab] for lab in labels)]
                   for name, v in splits.items()],
                  caption=f"Splits (no text shared between splits: {sp['shared_texts_between_splits']} shared)")]


TRAIN_ROWS = (
    ("method", "method"), ("base", "base model"), ("device", "device"), ("precision", "precision"),
    ("reproducibility", "reproducibility (default: same metrics elsewhere; strict: same bytes)"),
    ("cpu_kernels", "CPU kernels (PyTorch)"),
    ("trainable_params", "trainable parameters"), ("total_params", "total parameters"),
    ("trainable_pct", "trainable %"), ("train_rows", "train rows"), ("val_rows", "val rows"),
    ("max_length", "max length (tokens)"), ("steps", "steps"), ("epochs_run", "epochs run"),
    ("best_step", "best step (weights kept)"), ("stopped_early", "stopped early"),
    ("train_seconds", "train time (s)"), ("samples_per_s", "samples / s"),
)


def training_section(inp: Inputs) -> Section:
    s, train = Section("training", "Training"), inp.train
    if train is None:
        s.blocks.append(inp.absent("train", "train_steps", "train_val"))
        return s
    if (train["continual"] or {}).get("kept_production"):
        s.blocks.append(Callout("No training row was new to the production model: the candidate is production "
                                "itself (its training record below).", "warn"))
    # `k in train`: when the candidate is production itself, train.json is production's saved record
    s.blocks.append(Table(["", "value"], [[name, train[k]] for k, name in TRAIN_ROWS if k in train],
                          caption="Method and run"))
    if val := train.get("val"):
        s.blocks.append(Paragraph(f"Best validation evaluation: loss {fmt(val['loss'])}, accuracy "
                                  f"{fmt(val['accuracy'])}, macro_f1 {fmt(val['macro_f1'])}"))
    steps, evals = inp.train_steps, inp.train_val
    if steps is None or evals is None:
        s.blocks.append(inp.absent("train_steps", "train_val"))
    elif len(steps):  # empty when the candidate is production itself (no steps run)
        series = {"train loss (per step)": (steps["step"].tolist(), steps["loss"].tolist()),
                  "val loss": (evals["step"].tolist(), evals["loss"].tolist())}
        png = figures.line_chart(series, "step", "cross-entropy loss", "Training curves")
        s.blocks.append(Figure("training_loss", png, "Loss per optimizer step"))
        series = {c: (evals["step"].tolist(), evals[c].tolist()) for c in ("accuracy", "macro_f1")}
        png = figures.line_chart(series, "step", "score", "Validation during training")
        s.blocks.append(Figure("training_val", png, "Validation accuracy and macro F1 at each evaluation"))
    return s


def metrics_section(inp: Inputs) -> Section:
    ev, s = inp.evaluate, Section("metrics", "Test metrics")
    rows = [[metric_name(k), v, ci_text(ev, k)] for k, v in ev["headline"].items()]
    rows += [["macro precision", ev["macro"]["precision"], "–"], ["macro recall", ev["macro"]["recall"], "–"],
             ["weighted F1", ev["weighted_f1"], "–"]]
    s.blocks.append(Table(["metric", "value", ci_header(ev)], rows,
                          caption=f"Calibrated model on the test split ({ev['rows']:,} rows)"))
    s.blocks.append(Table(["class", "precision", "recall", "F1", "support"],
                          [[lab, v["precision"], v["recall"], v["f1"], v["support"]]
                           for lab, v in ev["per_class"].items()], caption="Per class"))
    kind = f" (positive class '{ev['positive_label']}')" if "positive_label" in ev else " (micro-averaged one-vs-rest)"
    s.blocks.append(_figure(inp, "curves_png", "curves", "ROC and precision-recall curves on the test split" + kind))
    return s


CALIBRATION_ROWS = ("ece", "ece_adaptive", "mce", "brier", "nll", "accuracy")


def calibration_section(inp: Inputs) -> Section:
    ev, cal, s = inp.evaluate, inp.calibrate, Section("calibration", "Calibration")
    test = ev["calibration"]
    if cal is None:
        s.blocks.append(inp.absent("calibrate"))
    else:
        s.blocks.append(Paragraph(
            f"Method: {cal['method']}"
            + (f", fitted temperature T = {cal['temperature']:.4f}" if cal["temperature"] is not None else "")
            + f", fitted on the val split ({cal['rows']:,} rows) only. ECE uses {cal['n_bins']} equal-width bins; "
            "adaptive ECE uses bins of equal size."))
    rows, tones = [], []
    for k in CALIBRATION_ROWS:
        before, after = test["uncalibrated"][k], test["calibrated"][k]
        rows.append([metric_name(k), *((cal["before"][k], cal["after"][k]) if cal else ()), before, after])
        # flag the proper scores (and ECE) that calibration made worse; MCE rests on one bin: too noisy to flag
        tones.append("bad" if k in ("ece", "brier", "nll") and worse_by(k, after - before) > 1e-9 else None)
    s.blocks.append(Table(
        ["metric", *(["val before", "val after"] if cal else []), "test before", "test after"], rows,
        caption="Before = softmax of the logits; after = calibrated. Test numbers are held out from the fit; rows "
        "where calibration made the test split worse are highlighted.", tones=tones))
    s.blocks.append(_figure(inp, "evaluate_reliability", "reliability_test",
                            "Reliability diagram on the test split (held out)"))
    s.blocks.append(_figure(inp, "calibrate_reliability", "reliability_val",
                            "Reliability diagram on the val split (the fitting data)"))
    return s


def confusion_section(inp: Inputs) -> Section:
    s, labels = Section("confusion", "Confusion matrix"), inp.evaluate["labels"]
    s.blocks.append(_figure(inp, "confusion_png", "confusion",
                            "Rows: true class; columns: predicted class (test split)"))
    if inp.confusion is None:
        s.blocks.append(inp.absent("confusion"))
    elif len(labels) <= 12:
        cm = pd.crosstab(inp.confusion["actual"], inp.confusion["predicted"]).reindex(
            index=labels, columns=labels, fill_value=0)
        s.blocks.append(Table(["true \\ predicted", *labels], [[lab, *(int(x) for x in cm.loc[lab])] for lab in labels],
                              caption="Counts"))
    return s


SLICE_NAMES = {"length": "Text length (characters)", "source": "Source dataset",
               "pii_replaced": "Personal data replaced"}


def slices_section(inp: Inputs) -> Section:
    ev, s = inp.evaluate, Section("slices", "Slices")
    s.blocks.append(Paragraph(
        "Metrics per group of test rows. A slice is highlighted red when its accuracy is below the lower bound "
        "of the overall accuracy's confidence interval, yellow when it has too few rows to judge. Macro F1 "
        "averages the classes present in the slice.", note=True))
    weak = {(g, v) for g, v, _ in weak_slices(ev)}
    for group, values in ev["slices"].items():
        name = SLICE_NAMES[group]
        s.blocks.append(Table(
            [name, "rows", "accuracy", "macro F1", "ECE", "NLL"],
            [[v, m["rows"], m["accuracy"], m["macro_f1"], m["ece"], m["nll"]] for v, m in values.items()],
            caption=name,
            tones=["warn" if m["small"] else "bad" if (group, v) in weak else None for v, m in values.items()]))
    return s


def mistakes_section(inp: Inputs) -> Section:
    s, mistakes = Section("mistakes", "Most confident mistakes"), inp.mistakes
    if mistakes is None:
        s.blocks.append(inp.absent("mistakes"))
        return s
    if not mistakes:
        s.blocks.append(Paragraph("No mistakes on the test split.", note=True))
        return s
    s.blocks.append(Paragraph("Wrong predictions the calibrated model was surest of. Texts are the anonymized "
                              "text from the clean stage (personal data replaced by <TYPE> tokens).", note=True))
    s.blocks.append(Table(
        ["confidence", "true", "predicted", "source", "id", "text"],
        [[m["confidence"], m["label"], m["predicted"], m["source"], m["id"],
          m["text"] if m["text"] is not None else "(withheld: not anonymized)"] for m in mistakes],
        text_columns=(5,)))
    return s


COMPRESS_COLUMNS = ("name", "kind", "source", "macro_f1", "accuracy", "ece", "size_mb", "params", "sparsity",
                    "latency_ms_p50", "latency_ms_p95", "throughput_b32", "speedup_vs_teacher",
                    "size_ratio_vs_teacher", "skipped")
TARGET_COLUMNS = ("variant", "kind", "condition", "metric", "target", "value", "met")


def compression_section(inp: Inputs) -> Section:
    """The compress stage's table (teacher first), its targets, and its quality-vs-cost chart."""
    s, c = Section("compression", "Compression"), inp.compress
    if c is None:
        s.blocks.append(inp.absent("compress", "compress_tradeoff"))
        return s
    rows = [c["teacher"], *c["variants"]]
    # the teacher has no ratios and a skipped variant only its name, kind and reason: show what any row has
    cols = [k for k in COMPRESS_COLUMNS if any(k in r for r in rows)]
    s.blocks.append(Table(cols, [[r.get(k) for k in cols] for r in rows],
                          caption="Variants, measured on the test split",
                          tones=["warn" if r.get("skipped") else None for r in rows]))
    if c["targets"]:
        s.blocks.append(Table(list(TARGET_COLUMNS), [[t[k] for k in TARGET_COLUMNS] for t in c["targets"]],
                              caption="Targets", tones=[None if t["met"] else "bad" for t in c["targets"]]))
    s.blocks.append(Paragraph(f"Timing conditions: {c['conditions']['shared_machine_note']}.", note=True))
    s.blocks.append(_figure(inp, "compress_tradeoff", "compression",
                            "Each point is one variant (the teacher is the uncompressed model)"))
    return s


def comparison_section(
    comparison: list[dict] | None, baseline: dict | None, baseline_note: str, ev: dict, tolerance: float
) -> Section:
    s = Section("comparison", "Comparison with the previous run")
    if comparison is None:
        s.blocks.append(Paragraph(f"No previous run: {baseline_note}.", note=True))
        return s
    s.blocks.append(Paragraph(
        f"Baseline: {baseline_note}. A headline metric worse by more than {tolerance} (absolute) is a regression "
        "(red); a class whose F1 dropped that much is yellow (small classes are noisy); better by more than that is "
        "green. 'outside CI' means the baseline value lies outside this run's confidence interval.", note=True))
    if baseline.get("rows") != ev["rows"]:
        s.blocks.append(Callout(f"The baseline was measured on {baseline.get('rows')} test rows, this run on "
                                f"{ev['rows']}: the test split changed, so differences mix model and data.", "warn"))
    s.blocks.append(Table(
        ["metric", "this run", "baseline", "change", "outside CI"],
        [[metric_name(r["key"]), r["current"], r["baseline"], f"{r['delta']:+.4f}", r["outside_ci"]]
         for r in comparison],
        tones=["bad" if r["regression"] else "warn" if r["worse"] else "good" if r["improvement"] else None
               for r in comparison]))
    return s


def build_sections(
    inp: Inputs, comparison: list[dict] | None, baseline: dict | None, baseline_note: str, tolerance: float
) -> list[Section]:
    """Every section in reading order: the verdicts first (summary, gate), then the evidence."""
    gate = gate_section(inp.gate) if inp.gate else Section("gate", "Promotion gate", [inp.absent("gate")])
    return [
        summary_section(inp, comparison, baseline_note),
        gate,
        data_section(inp),
        training_section(inp),
        metrics_section(inp),
        calibration_section(inp),
        confusion_section(inp),
        slices_section(inp),
        mistakes_section(inp),
        compression_section(inp),
        comparison_section(comparison, baseline, baseline_note, inp.evaluate, tolerance),
    ]
