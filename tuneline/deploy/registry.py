"""The model registry: promoted versions, the production pointer, the frozen regression set.

It lives in ${paths.registry}, outside every DVC output, because it must outlive the next
`dvc repro`: a retraining overwrites models/, and a rejected candidate must leave production as
it was. Layout:

  production.json          the pointer: version, path, git commit, dvc.lock sha256, metrics, ...
  history.jsonl            one line per gate decision (promoted or rejected), with the reasons
  regression.parquet       test rows frozen at the first promotion (id, text, label, source)
  versions/v0001/          a promoted model, never modified after it is written:
      finetuned/           copy of ${paths.models}/finetuned
      calibrated/          copy of ${paths.models}/calibrated (when the pipeline has one)
      train_ids.parquet    ids of every row this model (and the models it started from) trained on
      record.json          the same record as production.json had when it was promoted
      lineage/             dvc.lock, params.yaml, train.json and training curves of the run (the flow adds them)

A version folder is written under a temporary name and renamed, and the pointer is replaced
atomically, so a reader (the API) sees the old production or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from tuneline.data.assets import file_sha256
from tuneline.data.records import read_json, write_json, write_parquet
from tuneline.errors import UserError

MODEL_PARTS = ("finetuned", "calibrated")


class RegistryError(UserError, RuntimeError):
    pass


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------ reading
    @property
    def pointer(self) -> Path:
        return self.root / "production.json"

    def production(self) -> dict | None:
        """The production record, or None when nothing was promoted yet."""
        if not self.pointer.exists():
            return None
        return read_json(self.pointer)

    def version_dir(self, version: str) -> Path:
        return self.root / "versions" / version

    def production_dir(self) -> Path | None:
        rec = self.production()
        return None if rec is None else self.version_dir(rec["version"])

    def versions(self) -> list[str]:
        d = self.root / "versions"
        return sorted(p.name for p in d.glob("v[0-9]*") if p.is_dir()) if d.exists() else []

    def train_ids(self, version: str) -> set[str]:
        f = self.version_dir(version) / "train_ids.parquet"
        return set(pd.read_parquet(f)["id"]) if f.exists() else set()

    def regression_set(self) -> pd.DataFrame | None:
        f = self.root / "regression.parquet"
        return pd.read_parquet(f) if f.exists() else None

    def pointer_snapshot(self) -> dict:
        """What a pipeline run needs to know about production, as deterministic JSON: the same
        registry state gives the same bytes (the snapshot stage writes it for DVC to hash)."""
        rec = self.production()
        if rec is None:
            return {"version": None, "note": f"nothing promoted yet in {self.root}"}
        reg = self.root / "regression.parquet"
        return {
            "version": rec["version"],
            "dir": str(self.version_dir(rec["version"])),
            "promoted_at": rec.get("promoted_at"),
            "git_commit": rec.get("git_commit"),
            "finetuned_sha256": rec.get("finetuned_sha256"),
            "regression_set": str(reg) if reg.exists() else None,
            "regression_sha256": file_sha256(reg) if reg.exists() else None,
        }

    def history(self) -> list[dict]:
        f = self.root / "history.jsonl"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]

    # ------------------------------------------------------------------ writing
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time (two flow runs promoting together would race on the version number)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def log_decision(self, entry: dict) -> None:
        """Append one gate decision to history.jsonl."""
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"at": _now(), **entry}
        with open(self.root / "history.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def promote(self, models_dir: str | Path, *, train_ids: set[str], record: dict,
                test: pd.DataFrame | None = None, regression_rows: int = 500, seed: int = 0,
                keep: int = 3, extra: dict[str, Path] | None = None) -> dict:
        """Copy the candidate in ${paths.models} into a new version and point production at it.

        `record` (git commit, dvc.lock hash, metrics, decision) is stored with the version, and
        `extra` files ({relative name in the version: source file}) are copied in (missing ones skipped).
        At the first promotion, `regression_rows` rows of `test` become the frozen regression set.
        Versions beyond the newest `keep` are deleted. Returns the production record.
        """
        models_dir = Path(models_dir)
        if not (models_dir / "finetuned").is_dir():
            raise RegistryError(f"{models_dir / 'finetuned'}: no candidate model to promote (run the train stage)")
        with self.lock():
            existing = self.versions()
            version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
            target = self.version_dir(version)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
            try:
                for part in MODEL_PARTS:
                    if (models_dir / part).is_dir():
                        shutil.copytree(models_dir / part, tmp / part, symlinks=False)
                write_parquet(pd.DataFrame({"id": sorted(train_ids)}, dtype="string"), tmp / "train_ids.parquet")
                for name, src in (extra or {}).items():
                    if Path(src).is_file():
                        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, tmp / name)
                full = {"version": version, "path": str(target), "promoted_at": _now(),
                        "parts": [p for p in MODEL_PARTS if (tmp / p).is_dir()], **record}
                write_json(full, tmp / "record.json")
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if test is not None and not (self.root / "regression.parquet").exists():
                self.freeze_regression(test, regression_rows, seed, version)
            write_json(full, self.pointer)
            self._prune(keep, keep_version=version)
        return full

    def freeze_regression(self, test: pd.DataFrame, rows: int, seed: int, version: str) -> pd.DataFrame:
        """Keep a stratified sample of `test` as the regression set (never rewritten afterwards)."""
        frac = min(1.0, rows / max(len(test), 1))
        parts = [test[test["label"] == lab].sample(frac=frac, random_state=seed)
                 for lab in sorted(test["label"].unique())]
        sample = pd.concat(parts) if frac < 1 else test
        cols = [c for c in ("id", "text", "label", "source") if c in sample]
        out = sample[cols].sort_values("id").reset_index(drop=True)
        out["frozen_at"] = version
        write_parquet(out, self.root / "regression.parquet")
        return out

    def set_production(self, version: str) -> dict:
        """Point production at an existing version (a rollback)."""
        rec_file = self.version_dir(version) / "record.json"
        if not rec_file.exists():
            raise RegistryError(f"{version}: no such version in {self.root / 'versions'} "
                                f"(have {', '.join(self.versions()) or 'none'})")
        with self.lock():
            rec = {**read_json(rec_file), "restored_at": _now()}
            write_json(rec, self.pointer)
        return rec

    def _prune(self, keep: int, keep_version: str) -> None:
        for v in self.versions()[:-keep] if keep > 0 else []:
            if v != keep_version:
                shutil.rmtree(self.version_dir(v), ignore_errors=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
