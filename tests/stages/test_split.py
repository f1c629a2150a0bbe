"""split: stratified, seeded, and no text (after normalization) in two splits."""

import pandas as pd
import pytest

from stages import split
from tuneline.params import BaseParams, ClassificationParams, Paths, SplitParams
from tuneline.data.records import read_json, record_id, write_json, write_parquet
from tuneline.data.text import dedup_key
from tests.conftest import make_texts

BASE = BaseParams(seed=7)
TASK = ClassificationParams(labels=["ham", "spam"])


def _setup(tmp_path, df, success=True):
    paths = Paths(clean=str(tmp_path / "clean"), splits=str(tmp_path / "splits"), metrics=str(tmp_path / "m"),
                  reports=str(tmp_path))
    df = df.copy()
    df["id"] = [record_id(t, lab) for t, lab in zip(df["text"], df["label"])]
    df["source"] = "t"
    df["row"] = range(1, len(df) + 1)
    write_parquet(df, tmp_path / "clean" / "records.parquet")
    write_json({"success": success}, tmp_path / "m" / "validation.json")
    return paths


def _read(tmp_path):
    return {n: pd.read_parquet(tmp_path / "splits" / f"{n}.parquet") for n in split.SPLITS}


def _with_near_duplicates(n=400):
    df = make_texts(n, seed=1)
    # the same messages again with different case/spacing: identical after normalization
    dup = df.iloc[:60].copy()
    dup["text"] = dup["text"].str.upper().str.replace(" ", "   ", regex=False)
    return pd.concat([df, dup], ignore_index=True)


def test_no_normalized_text_in_two_splits_and_counts_reconcile(tmp_path):
    df = _with_near_duplicates()
    m = split.run(SplitParams(), BASE, TASK, _setup(tmp_path, df))
    parts = _read(tmp_path)
    keys = {n: set(p["text"].map(dedup_key)) for n, p in parts.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"] and not keys["val"] & keys["test"]
    assert sum(len(p) for p in parts.values()) == len(df) == m["rows_in"] == m["rows_out"]
    assert m["shared_texts_between_splits"] == 0 and m["duplicate_groups"] == 60
    clean_ids = pd.read_parquet(tmp_path / "clean" / "records.parquet")["id"]
    assert sorted(pd.concat(parts.values())["id"]) == sorted(clean_ids)
    assert read_json(tmp_path / "m" / "split.json")["rows_out"] == len(df)


def test_stratified_fractions_and_seeded(tmp_path):
    df = make_texts(800, seed=3)
    p = SplitParams(val_fraction=0.1, test_fraction=0.2)
    m = split.run(p, BASE, TASK, _setup(tmp_path, df))
    overall_spam = (df["label"] == "spam").mean()
    for name, frac in [("train", 0.7), ("val", 0.1), ("test", 0.2)]:
        s = m["splits"][name]
        assert abs(s["fraction"] - frac) < 0.02, (name, s)
        assert abs(s["labels"]["spam"] / s["rows"] - overall_spam) < 0.02, (name, s)
    first = {n: d["id"].tolist() for n, d in _read(tmp_path).items()}
    split.run(p, BASE, TASK, _setup(tmp_path, df))
    assert {n: d["id"].tolist() for n, d in _read(tmp_path).items()} == first
    split.run(p, BaseParams(seed=8), TASK, _setup(tmp_path, df))
    assert {n: d["id"].tolist() for n, d in _read(tmp_path).items()} != first


def test_kfold_assignment_keeps_groups_together(tmp_path):
    df = _with_near_duplicates()
    m = split.run(SplitParams(folds=4), BASE, TASK, _setup(tmp_path, df))
    train = _read(tmp_path)["train"]
    assert sorted(train["fold"].unique()) == [0, 1, 2, 3] and m["folds"] == 4
    per_key = train.assign(k=train["text"].map(dedup_key)).groupby("k")["fold"].nunique()
    assert (per_key == 1).all()
    sizes = train["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 0.2 * sizes.mean()


def test_refuses_to_split_after_failed_validation(tmp_path):
    with pytest.raises(split.SplitError, match="failed expectations"):
        split.run(SplitParams(), BASE, TASK, _setup(tmp_path, make_texts(50), success=False))


def test_bad_split_params_are_errors():
    with pytest.raises(ValueError, match="leave >= 10% for train"):
        SplitParams(val_fraction=0.5, test_fraction=0.45)
    with pytest.raises(ValueError, match="folds must be 0"):
        SplitParams(folds=1)
