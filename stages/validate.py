"""Check the cleaned records against a great-expectations suite before anything learns from them.

Reads: data/clean/records.parquet
Writes: reports/validation.html (self-contained, readable offline),
        reports/metrics/validation.json (success, counts, per-expectation results with example ids)
Params: classification, paths, validate      Run: dvc repro validate   (or: python -m stages.validate)

The suite (tuneline.data.validation.build_suite) checks the schema, nulls, blank text, label set, text
length, unique ids, rows per class and PII patterns left after cleaning. Both outputs are written
whether the data passes or not; on failure the stage then exits non-zero with a message naming
each failed expectation and example row ids, so `dvc repro` stops before split. The report and
the JSON hold ids and counts only, never cell values (failing text may still hold personal data).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuneline.errors import UserError, run_main
from tuneline.logs import setup_logging
from tuneline.params import ClassificationParams, Paths, ValidateParams, load_params
from tuneline.data.records import read_parquet, write_json, write_text
from tuneline.data.validation import failure_message, render_html, validate_records

log = logging.getLogger("tuneline.validate")


class ValidationFailed(UserError, ValueError):
    """The records broke at least one expectation; the message names each one and example ids."""


def run(p: ValidateParams, task: ClassificationParams, paths: Paths) -> dict:
    source = Path(paths.clean) / "records.parquet"
    report = Path(paths.reports) / "validation.html"
    df = read_parquet(source)
    summary = validate_records(df, p, task.labels)
    summary["report"] = str(report)
    write_text(render_html(summary, source=str(source)), report)
    write_json(summary, Path(paths.metrics) / "validation.json")
    counts = summary["expectations"]
    log.info("validate: %d rows, %d/%d expectations passed%s", summary["rows"], counts["passed"],
             counts["evaluated"], "" if summary["success"] else f"; failed: {', '.join(summary['failed'])}")
    if not summary["success"]:
        raise ValidationFailed(f"{source}: " + failure_message(summary, str(report)))
    return summary


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.validate, params.classification, params.paths)  # a failed check: one `error:` message, exit 2 (run_main)


if __name__ == "__main__":
    run_main(main)
