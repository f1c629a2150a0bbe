"""Split the validated records into train/val/test without leakage.

Reads: data/clean/records.parquet, reports/metrics/validation.json (must say success)
Writes: data/splits/{train,val,test}.parquet, reports/metrics/split.json
Params: base, classification, paths, split      Run: dvc repro split   (or: python -m stages.split)

Texts identical after normalization (tuneline.data.text.dedup_key) form one group, and a group goes
to exactly one split, so no test text was seen in training. Groups are assigned per label
(stratified) with base.seed. With split.folds = k, train rows also get a `fold` column (0..k-1)
from a stratified group k-fold, for cross-validation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.errors import UserError, run_main
from tuneline.logs import setup_logging
from tuneline.params import BaseParams, ClassificationParams, Paths, SplitParams, load_params
from tuneline.data.records import read_json, read_parquet, write_json, write_parquet
from tuneline.data.text import dedup_key

log = logging.getLogger("tuneline.split")
SPLITS = ("train", "val", "test")


class SplitError(UserError, ValueError):
    pass


def assign_splits(df: pd.DataFrame, p: SplitParams, seed: int) -> pd.Series:
    """Split name per row. Groups of identical normalized text stay together; per label,
    groups are shuffled and filled into test, then val, up to their fraction of that label."""
    keys = df["text"].map(dedup_key)
    group = pd.factorize(keys)[0]
    # a group's label for stratification: its most frequent label (ties -> first in sort order)
    g = pd.DataFrame({"group": group, "label": df["label"].to_numpy()})
    g_label = g.groupby("group")["label"].agg(lambda s: s.value_counts().sort_index().idxmax())
    g_size = g.groupby("group").size()
    rng = np.random.default_rng(seed)
    assignment = {}
    for label in sorted(g_label.unique()):
        groups = g_label.index[g_label == label].to_numpy()
        groups = groups[rng.permutation(len(groups))]
        sizes = g_size.loc[groups].to_numpy()
        total = sizes.sum()
        targets = {"test": p.test_fraction * total, "val": p.val_fraction * total}
        filled = {"test": 0, "val": 0}
        for gid, size in zip(groups, sizes):
            for name in ("test", "val"):
                if filled[name] + size / 2 <= targets[name]:
                    assignment[gid] = name
                    filled[name] += size
                    break
            else:
                assignment[gid] = "train"
    return pd.Series([assignment[x] for x in group], index=df.index, name="split")


def assign_folds(train: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

    groups = pd.factorize(train["text"].map(dedup_key))[0]
    folds = np.full(len(train), -1, dtype="int64")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, idx) in enumerate(cv.split(np.zeros(len(train)), train["label"], groups)):
        folds[idx] = fold
    return folds


def run(p: SplitParams, base: BaseParams, task: ClassificationParams, paths: Paths) -> dict:
    validation = Path(paths.metrics) / "validation.json"
    if validation.exists() and not read_json(validation).get("success", False):
        raise SplitError(f"{validation} reports failed expectations; fix the data before splitting "
                         f"(see {Path(paths.reports) / 'validation.html'})")
    df = read_parquet(Path(paths.clean) / "records.parquet")
    small = df["label"].value_counts()
    small = small[small < 3]
    if len(small):
        raise SplitError(f"labels with fewer than 3 rows cannot be stratified into 3 splits: {small.to_dict()}")
    split = assign_splits(df, p, base.seed)
    out = {"rows_in": len(df), "splits": {}}
    for name in SPLITS:
        part = df[split == name].reset_index(drop=True)
        if name == "train" and p.folds:
            part["fold"] = assign_folds(part, p.folds, base.seed)
        write_parquet(part, Path(paths.splits) / f"{name}.parquet")
        out["splits"][name] = {
            "rows": len(part),
            "fraction": round(len(part) / len(df), 4),
            "labels": {lab: int((part["label"] == lab).sum()) for lab in task.labels},
        }
    out["rows_out"] = sum(s["rows"] for s in out["splits"].values())
    keys = {name: set(df.loc[split == name, "text"].map(dedup_key)) for name in SPLITS}
    out["shared_texts_between_splits"] = sum(len(keys[a] & keys[b]) for a, b in
                                             [("train", "val"), ("train", "test"), ("val", "test")])
    out["duplicate_groups"] = int(len(df) - df["text"].map(dedup_key).nunique())
    out["folds"] = p.folds
    write_json(out, Path(paths.metrics) / "split.json")
    log.info("split: %s", ", ".join(f"{n}={out['splits'][n]['rows']}" for n in SPLITS))
    return out


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.split, params.base, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
