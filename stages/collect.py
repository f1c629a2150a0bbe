"""Collect every dataset listed in params into one record table.

Reads: the sources in collect.datasets (local csv/jsonl/parquet files or globs, a hub dataset,
       a pinned PyPI artifact); with collect.feedback, also ${paths.feedback}/snapshot.jsonl (user
       feedback exported by the snapshot stage) as a last dataset named `feedback`
Writes: data/collected/records.parquet (id, text, label, source, row),
        data/rejects/collect.parquet (rows that could not be read, each with a reason),
        reports/metrics/collect.json
Params: classification, paths, collect      Run: dvc repro collect   (or: python -m stages.collect)

Ids are sha256 of (text, label), so collecting the same data again gives the same bytes.
Exact duplicates (same text and label) keep their first occurrence and are counted.
Per source: rows_read = rows_kept + duplicates + rejected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tuneline.data import assets
from tuneline.data.readers import CollectError, read_dataset
from tuneline.data.records import RECORD_COLUMNS, record_id, rejects_frame, write_json, write_parquet
from tuneline.errors import run_main
from tuneline.logs import setup_logging
from tuneline.params import ClassificationParams, CollectParams, DatasetSpec, LocalSource, Paths, load_params
from tuneline.tasks.labels import LabelSet

log = logging.getLogger("tuneline.collect")


# --------------------------------------------------------------------------- stage
def feedback_dataset(p: CollectParams, paths: Paths) -> list[DatasetSpec]:
    """The feedback snapshot as one more jsonl dataset (text, label), or nothing when it is off or absent."""
    snapshot = Path(paths.feedback) / "snapshot.jsonl"
    if not p.feedback:
        return []
    if not snapshot.exists():
        log.warning("feedback: %s does not exist (run `dvc repro snapshot`); collecting without feedback", snapshot)
        return []
    if not snapshot.read_bytes().strip():
        return []  # no feedback yet: nothing to add (an empty user file, by contrast, is an error)
    return [DatasetSpec(name="feedback", source=LocalSource(path=str(snapshot)), format="jsonl")]


def run(p: CollectParams, task: ClassificationParams, paths: Paths) -> dict:
    allowed = LabelSet.of(task)
    kept: list[dict] = []
    rejected: list[pd.DataFrame] = []
    seen: set[str] = set()
    per_source = {}
    for spec in p.datasets + feedback_dataset(p, paths):
        rows = read_dataset(spec, paths.cache)
        dupes = 0
        bad_label = []
        for r in rows.good:
            if r["label"] not in allowed:
                bad_label.append({**r, "reason": f"{r.get('file', spec.name)}: {allowed.not_allowed(r['label'])}"})
                continue
            rid = record_id(r["text"], r["label"])
            if rid in seen:
                dupes += 1
                continue
            seen.add(rid)
            kept.append({"id": rid, "text": r["text"], "label": r["label"], "source": spec.name, "row": r["row"]})
        bad = rows.bad + bad_label
        if bad:
            frame = pd.DataFrame(bad)
            frame["source"] = spec.name
            frame["id"] = None
            rejected.append(rejects_frame(frame.drop(columns=["reason"]), "collect", frame["reason"]))
        n_read = len(rows.good) + len(rows.bad)
        per_source[spec.name] = {"source": assets.describe(spec.source), "rows_read": n_read,
                                 "rows_kept": len(rows.good) - dupes - len(bad_label),
                                 "duplicates": dupes, "rows_rejected": len(bad)}
        log.info("%s: read %d rows, kept %d, %d duplicates, %d rejected", spec.name, n_read,
                 per_source[spec.name]["rows_kept"], dupes, len(bad))
    if not kept:
        raise CollectError("collect: no usable rows in any dataset; see data/rejects/collect.parquet")
    records = pd.DataFrame(kept, columns=RECORD_COLUMNS)
    records["row"] = records["row"].astype("int64")
    rejects = (pd.concat(rejected, ignore_index=True) if rejected
               else rejects_frame(pd.DataFrame(columns=RECORD_COLUMNS), "collect", []))
    for col in ("id", "text", "label", "source", "reason", "file"):
        if col in rejects:
            rejects[col] = rejects[col].astype("string")
    write_parquet(records, Path(paths.collected) / "records.parquet")
    write_parquet(rejects, Path(paths.rejects) / "collect.parquet")
    metrics = {
        "rows_read": sum(s["rows_read"] for s in per_source.values()),
        "rows_out": len(records),
        "duplicates": sum(s["duplicates"] for s in per_source.values()),
        "rows_rejected": len(rejects),
        "labels": {k: int(v) for k, v in records["label"].value_counts().sort_index().items()},
        "sources": per_source,
    }
    write_json(metrics, Path(paths.metrics) / "collect.json")
    log.info("collect: %d rows read -> %d records, %d duplicates, %d rejected", metrics["rows_read"],
             metrics["rows_out"], metrics["duplicates"], metrics["rows_rejected"])
    return metrics


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.collect, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
