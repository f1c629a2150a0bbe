"""The record schema and its IO: parquet/JSON written atomically, stable ids.

A record is one labelled text. Columns every stage can rely on:
  id      stable 16-hex id, sha256 of (text, label) as collected: same data -> same id
  text    the text (raw after collect, cleaned and anonymized after clean)
  label   a label from classification.labels
  source  name of the collect dataset the row came from
  row     1-based row (line for csv/jsonl) in that source, for tracing a record back
clean adds `pii_replaced` (bool) and `pii_count` (int); split adds `fold` to train.
Rejected rows keep the columns they had plus `stage` and `reason`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

RECORD_COLUMNS = ["id", "text", "label", "source", "row"]
REJECT_COLUMNS = ["id", "text", "label", "source", "row", "stage", "reason"]


def record_id(text: str, label: str) -> str:
    """Stable id of a (text, label) pair."""
    return hashlib.sha256(f"{text}\x1f{label}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`.

    A killed writer leaves only a stray temp file, never a half-written artifact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp_path) and move the result into place."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def replace_dir(tmp: str | Path, target: str | Path) -> None:
    """Move a finished folder over `target`; the old one is removed only after the rename."""
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    return write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_parquet(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the stage that writes it (dvc repro)")
    return pd.read_parquet(path)


def write_json(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=_jsonable) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text(text: str, path: str | Path) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def rejects_frame(df: pd.DataFrame, stage: str, reasons: pd.Series | list[str]) -> pd.DataFrame:
    """Rows of `df` as quarantine records with the stage name and a reason each."""
    out = df.copy()
    out["stage"] = stage
    out["reason"] = list(reasons)
    for col in REJECT_COLUMNS:
        if col not in out:
            out[col] = None
    return out[REJECT_COLUMNS + [c for c in out.columns if c not in REJECT_COLUMNS]]
