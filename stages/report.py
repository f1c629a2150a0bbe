"""One page a reviewer reads: is the new model good, calibrated, fair across slices, better than the last?

Reads: reports/metrics/{collect,clean,validation,split,train,calibrate,evaluate,compress,gate}.json,
       reports/mistakes.json, reports/plots/train_{steps,val}.tsv, reports/plots/calibrate/reliability.png,
       reports/plots/evaluate/{confusion.csv,confusion.png,curves.png,reliability.png},
       reports/plots/compress/tradeoff.png (the list: tuneline.evaluate.report.INPUTS), and the baseline:
       the evaluate.json committed at git HEAD (the previous run), or report.baseline
Writes: reports/index.html (self-contained: inline CSS, figures as data URIs, no external
        references; opens offline), reports/report.md + reports/figures/*.png (the same
        content as Markdown), models/calibrated/README.md (the model card)
Params: classification, paths, report      Run: dvc repro report   (or: python -m stages.report)

evaluate.json is required (the report is about the evaluated model). Any other missing input gives
its section a red "Not available: <file> is missing (run: dvc repro <stage>)" callout; the summary
lists them, and they are logged and returned in `missing`. The comparison flags a headline metric as a regression when it
is worse than the baseline by more than report.regression_tolerance (absolute), and says whether
the baseline value lies outside the new 95% interval. The git baseline is not a DVC dependency:
after a commit, run `dvc repro -f report` (or any upstream change) to compare against the new HEAD.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuneline.errors import UserError, run_main
from tuneline.evaluate.baseline import compare, load_baseline
from tuneline.evaluate.document import render_html, render_markdown, write_figures
from tuneline.evaluate.model_card import model_card
from tuneline.evaluate.report import build_sections, input_path, metric_name, read_inputs
from tuneline.logs import setup_logging
from tuneline.params import ClassificationParams, Paths, ReportParams, load_params
from tuneline.tasks.labels import LabelSet
from tuneline.data.records import write_text

log = logging.getLogger("tuneline.report")


class ReportError(UserError, ValueError):
    pass


def run(p: ReportParams, task: ClassificationParams, paths: Paths) -> dict:
    inp = read_inputs(paths)
    ev = inp.evaluate
    if ev is None:
        raise ReportError(f"{input_path(paths, 'evaluate')}: missing; run the evaluate stage (dvc repro evaluate)")
    LabelSet.of(task).require(ev["labels"], input_path(paths, "evaluate"), "rerun the pipeline (dvc repro)")
    baseline, baseline_note = load_baseline(p.baseline, input_path(paths, "evaluate"))
    comparison = compare(ev, baseline, p.regression_tolerance) if baseline else None
    sections = build_sections(inp, comparison, baseline, baseline_note, p.regression_tolerance)

    reports = Path(paths.reports)
    subtitle = f"{ev['model']['method']} fine-tuning of {ev['model']['base']}; test split {ev['rows']:,} rows"
    figure_dir = reports / "figures"
    written = {f.name for f in write_figures(sections, figure_dir)}
    for stale in figure_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    write_text(render_html(p.title, sections, subtitle), reports / "index.html")
    write_text(render_markdown(p.title, sections, subtitle, figure_dir="figures"), reports / "report.md")
    write_text(model_card(inp, comparison), Path(paths.models) / "calibrated" / "README.md")

    regressions = [r["key"] for r in comparison or [] if r["regression"]]
    for what in inp.missing.values():
        log.warning("report: %s; its section says 'Not available'", what)
    log.info("report: %d sections -> %s, %s, model card; baseline: %s; %s", len(sections), reports / "index.html",
             reports / "report.md", baseline_note,
             f"REGRESSIONS: {', '.join(map(metric_name, regressions))}" if regressions else "no regressions")
    return {"sections": [s.id for s in sections], "regressions": regressions, "baseline": baseline_note,
            "missing": sorted(inp.missing)}


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.report, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
