"""Continual learning: continue from the production model on new data, rehearsing old data.

With `train.init_from: production`, the train stage starts from the production model's weights
instead of the base model and trains on
  - every training row the production model has not seen (new data: feedback, new sources), plus
  - a replay sample of rows it has seen: `train.replay_ratio` old rows per new row (rehearsal,
    which keeps the model from forgetting earlier data; 0 trains on new rows only).
"Seen" is the production version's train_ids.parquet in the registry, which already includes
what the models it started from saw. The production pointer comes from ${paths.models}/production.json,
the snapshot stage's copy, so DVC reruns train when production changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.data.records import read_json
from tuneline.deploy.registry import Registry


@dataclass(frozen=True)
class InitFrom:
    version: str
    model_dir: Path
    """The production version's finetuned/ folder."""
    seen: frozenset[str]
    """Ids of every row the production model (and its ancestors) trained on."""


def production_init(models_dir: str | Path, registry_dir: str | Path) -> InitFrom | None:
    """The production model to continue from, or None when nothing was promoted yet."""
    pointer = read_json(Path(models_dir) / "production.json")
    if not pointer.get("version"):
        return None
    reg = Registry(registry_dir)
    version = pointer["version"]
    folder = reg.version_dir(version) / "finetuned"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the production model named by {Path(models_dir) / 'production.json'} "
                                f"is gone from the registry (pruned?); rerun `dvc repro snapshot`")
    return InitFrom(version=version, model_dir=folder, seen=frozenset(reg.train_ids(version)))


def replay_mix(train: pd.DataFrame, seen: set[str] | frozenset[str], ratio: float,
               seed: int) -> tuple[pd.DataFrame, dict]:
    """Every unseen row plus round(ratio * unseen) seen rows drawn at random (all of them if fewer)."""
    is_seen = train["id"].isin(seen)
    new, old = train[~is_seen], train[is_seen]
    k = min(len(old), int(round(ratio * len(new))))
    pick = np.sort(np.random.default_rng(seed).choice(len(old), size=k, replace=False)) if k else []
    replay = old.iloc[pick]
    mixed = pd.concat([new, replay]).sort_index()
    return mixed, {"new_rows": int(len(new)), "seen_rows": int(len(old)), "replay_rows": int(k),
                   "replay_ratio": ratio, "rows": int(len(mixed))}
