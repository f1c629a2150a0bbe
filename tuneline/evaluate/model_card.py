"""The model card (`models/calibrated/README.md`): what the model is, the data it learned from, its test
metrics and calibration, and its limits, written from the same upstream files as the report.

A missing upstream file is said so in the card ("not available: ... is missing"), never left out.
"""

from __future__ import annotations

from tuneline.evaluate.document import fmt
from tuneline.evaluate.report import Inputs, ci_header, ci_text, metric_name, weak_slices

FRONT_MATTER = [
    "---",
    "library_name: transformers",
    "pipeline_tag: text-classification",
    "language: [en]",
    "tags: [tuneline, calibrated]",
    "---",
    "",
]


def _missing(inp: Inputs, name: str) -> str:
    return f"- Not available: {inp.missing[name]}."


def model_section(inp: Inputs) -> list[str]:
    ev, train = inp.evaluate, inp.train
    model, labels = ev["model"], ev["labels"]
    trained = (f" ({train['trainable_params']:,} of {train['total_params']:,} parameters trained)"
               if train and "trainable_params" in train else "")
    calibration = (f"- Calibration: {model['calibration']}"
                   + (" scaling" if model["calibration"] in ("temperature", "vector") else "")
                   + (f" (T = {model['temperature']:.4f})" if model["temperature"] is not None else "")
                   + ", fitted on the validation split (`calibrator.json`, plain JSON).")
    return [
        "## Model", "",
        f"- Base model: {model['base']}; fine-tuning method: {model['method']}{trained}",
        f"- Labels (class-id order): {', '.join(labels)}",
        calibration,
        "- Files: `model.json` points at the fine-tuned model folder (with its sha256); load both with "
        "`tuneline.deploy.predictor.Predictor.load(<models dir>, ...)` or `tuneline.evaluate.calibration.load_calibrated` + "
        "`tuneline.train.models.load_finetuned`.",
        "",
        "## Intended use", "",
        f"Sorting short English texts into {', '.join(labels)}, as a decision aid whose calibrated probability can "
        "be thresholded (e.g. send low-confidence texts to a person). Out of scope: other languages, texts much "
        "longer than the training data, label sets other than the one above, and any decision about a person made "
        "without human review.",
        "",
    ]


def data_section(inp: Inputs) -> list[str]:
    lines = ["## Data", ""]
    if inp.collect:
        sources = [name for name, v in inp.collect["sources"].items() if v["rows_kept"]]
        lines.append(f"- {inp.collect['rows_out']:,} records collected from: {', '.join(sources)}.")
    else:
        lines.append(_missing(inp, "collect"))
    if inp.split:
        lines.append("- Splits: " + ", ".join(f"{k} {v['rows']:,}" for k, v in inp.split["splits"].items())
                     + "; identical texts never cross splits.")
    else:
        lines.append(_missing(inp, "split"))
    lines += ["- Personal data (names, phone numbers, e-mail addresses, ...) was replaced by type tokens before "
              "training (presidio); see the limitations.", ""]
    return lines


def evaluation_section(inp: Inputs, comparison: list[dict] | None) -> list[str]:
    ev = inp.evaluate
    lines = ["## Evaluation (test split, calibrated)", "", f"| metric | value | {ci_header(ev)} |", "|---|---:|---|"]
    lines += [f"| {metric_name(k)} | {fmt(v)} | {ci_text(ev, k)} |" for k, v in ev["headline"].items()]
    before, after = ev["calibration"]["uncalibrated"], ev["calibration"]["calibrated"]
    lines += ["", f"Calibration on the test split: ECE {fmt(before['ece'])} before, {fmt(after['ece'])} after; "
                  f"NLL {fmt(before['nll'])} before, {fmt(after['nll'])} after."]
    if comparison:
        bad = [metric_name(r["key"]) for r in comparison if r["regression"]]
        lines += ["", "Against the previous run: " + ("regressions in " + ", ".join(bad) if bad else "no regression")
                  + "."]
    return lines + [""]


def limitations_section(inp: Inputs) -> list[str]:
    weak = [f"{g} = {v} (accuracy {m['accuracy']:.3f}, {m['rows']} rows)" for g, v, m in weak_slices(inp.evaluate)]
    return [
        "## Limitations", "",
        "- Metrics come from one test split of the same sources as the training data; new sources, new phrasing or "
        "a shift in label frequencies will lower them, and calibration is only as good as the validation split it "
        "was fitted on.",
        "- Weaker slices: " + ("; ".join(weak) if weak else "none below the overall accuracy interval") + ".",
        "- Anonymization is automatic and imperfect: some personal data may remain in training texts, and type "
        "tokens (e.g. <PHONE_NUMBER>) are themselves a signal the model may lean on.",
        "- See the full report (reports/index.html) for the slices, the most confident mistakes and the reliability "
        "diagrams.",
        "",
    ]


def model_card(inp: Inputs, comparison: list[dict] | None) -> str:
    labels = inp.evaluate["labels"]
    lines = [*FRONT_MATTER, f"# Calibrated text classifier ({', '.join(labels)})", "",
             "Generated by the tuneline `report` stage from the pipeline's metrics; do not edit by hand.", ""]
    lines += model_section(inp) + data_section(inp) + evaluation_section(inp, comparison) + limitations_section(inp)
    return "\n".join(lines)
