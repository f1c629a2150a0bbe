"""Snapshot the live inputs of a retraining: the feedback store and the production pointer.

Reads: the feedback store (feedback.url; default SQLite at ${paths.feedback}/feedback.db) and
       the registry's production pointer (${paths.registry}/production.json). Both live outside
       DVC, so the retraining flow forces this stage (`dvc repro -f -s snapshot` by hand); it writes
       the same bytes for the same state, so the stages after it rerun only when feedback was
       added or production changed. A plain second `dvc repro` stays a no-op.
Writes: ${paths.feedback}/snapshot.jsonl (text, label, feedback_id, kind, created_at,
        model_version; one line per trainable item, ordered by id): collect reads it;
        ${paths.models}/production.json (version, folder, regression-set sha256; version null when
        nothing was promoted yet): the gate reads it; reports/metrics/snapshot.json
Params: paths, feedback      Run: dvc repro snapshot   (or: python -m stages.snapshot)

Corrections (`label` items) always become rows; `good` ratings become rows with the predicted
label when feedback.ratings_as_labels; `bad` ratings are counted but not trained on (the
right label is unknown). No store yet gives an empty snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuneline.errors import run_main
from tuneline.deploy.feedback import default_url, export_snapshot
from tuneline.logs import setup_logging
from tuneline.params import FeedbackParams, Paths, load_params
from tuneline.data.records import write_json
from tuneline.deploy.registry import Registry

log = logging.getLogger("tuneline.snapshot")


def run(p: FeedbackParams, paths: Paths) -> dict:
    url = p.url or default_url(paths.feedback)
    out = Path(paths.feedback) / "snapshot.jsonl"
    metrics = export_snapshot(url, out, ratings_as_labels=p.ratings_as_labels, busy_timeout_ms=p.busy_timeout_ms)
    production = Registry(paths.registry).pointer_snapshot()
    write_json(production, Path(paths.models) / "production.json")
    metrics["production_version"] = production["version"]
    write_json(metrics, Path(paths.metrics) / "snapshot.json")
    if not metrics["store_exists"]:
        log.info("snapshot: no feedback store at %s yet -> empty %s; production %s", metrics["store"], out,
                 production["version"])
    else:
        log.info("snapshot: %d feedback items (up to id %d) -> %d training rows in %s; skipped %s; production %s",
                 metrics["items"], metrics["max_id"], metrics["rows_out"], out, metrics["skipped"],
                 production["version"])
    return metrics


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.feedback, params.paths)


if __name__ == "__main__":
    run_main(main)
