"""Leak audit: stop the pipeline if personal data is left in anything it ships.

Reads: data/splits/*.parquet (every string column), reports/metrics/*.json (every stage's metrics),
       reports/*.json, *.html, *.md (mistakes.json, validation.html, index.html, report.md) and
       models/calibrated/README.md (the model card)
Writes: reports/metrics/audit.json (files, rows and values scanned, hits per detector, where each
        hit is: file + row id / JSON path / line + detector; never a value)
Params: paths, audit      Run: dvc repro audit   (or: python -m stages.audit)

The detectors (tuneline.data.audit: regexes with checksums, audit.detectors) are independent of
the clean stage's presidio engine, so a blind spot there is not repeated here. The clean stage's
placeholders (<PHONE_NUMBER>, hash outputs), record ids and hashes, and the report's embedded
figures never count; audit.allow lists known non-personal values. The files are found by the
globs above, so a new report file is audited too (and must then be listed in dvc.yaml's deps, which
the end-to-end test checks). audit.json is written either way; on a hit the stage then exits
non-zero naming file, row id and detector of each hit, so `dvc repro` and the retraining flow
stop before anything is promoted. The stage is last in the DAG: it depends on every file it reads.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tuneline.data.audit import Auditor, audit_files, failure_message
from tuneline.errors import UserError, run_main
from tuneline.logs import setup_logging
from tuneline.params import AuditParams, Paths, load_params
from tuneline.data.records import write_json

log = logging.getLogger("tuneline.audit")
OUTPUT = "audit.json"


class LeakFound(UserError, ValueError):
    """A detector hit a shipped artifact; the message names file, location and detector, never the value."""


def audit_targets(paths: Paths) -> list[Path]:
    """Every shipped artifact the audit reads (see the module docstring), each once, in a stable order."""
    splits = sorted(Path(paths.splits).glob("*.parquet"))
    if not splits:
        raise UserError(f"{paths.splits}: no split files (*.parquet) to audit; run the split stage first (dvc repro)")
    metrics = Path(paths.metrics)
    files = splits + sorted(p for p in metrics.glob("*.json") if p.name != OUTPUT)
    reports = Path(paths.reports)
    files += sorted(p for p in reports.iterdir() if p.is_file() and p.suffix in (".json", ".html", ".md")) \
        if reports.is_dir() else []
    card = Path(paths.models) / "calibrated" / "README.md"
    files += [card] if card.exists() else []
    seen: dict[Path, Path] = {}
    for f in files:
        seen.setdefault(f.resolve(), f)
    return list(seen.values())


def run(p: AuditParams, paths: Paths) -> dict:
    start = time.monotonic()
    files = audit_targets(paths)
    summary = audit_files(files, Auditor(p.detectors, p.allow), max_listed=p.max_listed)
    summary["seconds"] = round(time.monotonic() - start, 2)
    write_json(summary, Path(paths.metrics) / OUTPUT)
    hits = ", ".join(f"{k} {v}" for k, v in summary["hits_per_detector"].items() if v) or "none"
    log.info("audit: %d files, %d split rows, %d JSON values, %d text lines scanned in %.1f s; hits: %s",
             summary["files_scanned"], summary["rows_scanned"], summary["json_values_scanned"],
             summary["text_lines_scanned"], summary["seconds"], hits)
    if not summary["passed"]:
        raise LeakFound("audit: " + failure_message(summary, p.max_listed)
                        + f"\nSummary: {Path(paths.metrics) / OUTPUT}")
    return summary


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.audit, params.paths)


if __name__ == "__main__":
    run_main(main)
