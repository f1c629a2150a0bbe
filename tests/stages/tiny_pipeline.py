"""Helpers for the calibrate/evaluate/compress stage tests: small splits and a tiny fine-tuned model
(the report tests run on the tiny end-to-end pipeline's real outputs instead: conftest `tiny_pipeline`).

The model is the conftest's 2-layer BERT with a classification head, trained for a few steps
on the synthetic ham/spam texts (so its probabilities mean something) and saved with the train
stage's own `tuneline.train.models.save_finetuned`, so the stages load it exactly as they load a real one.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import single_thread  # noqa: F401 (re-exported for the stage tests)
from tuneline.params import BaseParams, ClassificationParams, Paths
from tuneline.data.records import record_id, write_parquet

LABELS = ["ham", "spam"]


def make_paths(root: Path) -> Paths:
    """Every path of params.yaml `paths:` moved under `root`."""
    return Paths(**{name: str(root / str(field.default).lstrip("~/")) for name, field in Paths.model_fields.items()})


def make_split(n: int, seed: int) -> pd.DataFrame:
    from conftest import make_texts

    df = make_texts(n, seed=seed)
    rng = np.random.default_rng(seed)
    flip = rng.random(n) < 0.1  # label noise, so the model is neither perfect nor calibrated
    df.loc[flip, "label"] = np.where(df.loc[flip, "label"] == "ham", "spam", "ham")
    pii = rng.random(n) < 0.3
    df.loc[pii, "text"] = df.loc[pii, "text"] + " <PHONE_NUMBER>"
    # a few long texts so every length bucket has rows
    long_rows = rng.random(n) < 0.2
    df.loc[long_rows, "text"] = df.loc[long_rows, "text"].str.cat(
        [" ".join(["ok"] * 40)] * int(long_rows.sum()), sep=" "
    )
    df["id"] = [record_id(t, lab) for t, lab in zip(df["text"], df["label"])]
    df["source"] = np.where(rng.random(n) < 0.5, "sms_spam", "feedback")
    df["row"] = np.arange(1, n + 1)
    df["pii_replaced"] = pii
    df["pii_count"] = pii.astype("int64")
    return df[["id", "text", "label", "source", "row", "pii_replaced", "pii_count"]]


def write_splits(paths: Paths, sizes=(200, 120, 160)) -> dict[str, pd.DataFrame]:
    out = {}
    for i, (name, n) in enumerate(zip(("train", "val", "test"), sizes)):
        out[name] = make_split(n, seed=100 + i)
        write_parquet(out[name], Path(paths.splits) / f"{name}.parquet")
    return out


def train_tiny(base_dir: Path, train: pd.DataFrame, out_dir: Path, epochs: int = 4, max_length: int = 64) -> Path:
    """A few epochs of full fine-tuning of the tiny BERT, saved as a `models/finetuned` folder."""
    import torch

    from tuneline.evaluate.inference import pad_batch
    from tuneline.train.models import build_classifier, save_finetuned

    torch.manual_seed(0)
    model, tok = build_classifier(base_dir, LABELS)
    ids = tok(train["text"].tolist(), truncation=True, max_length=max_length)["input_ids"]
    y = torch.tensor([LABELS.index(v) for v in train["label"]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(ids), generator=g).tolist()
        for s in range(0, len(order), 32):
            rows = order[s : s + 32]
            batch = pad_batch([ids[i] for i in rows], tok.pad_token_id or 0)
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    meta = {
        "method": "full",
        "labels": LABELS,
        "max_length": max_length,
        "base": str(base_dir),
        "base_source": {"kind": "local", "path": str(base_dir)},
    }
    return save_finetuned(model, tok, out_dir, meta)


@functools.cache
def finetuned_model(base_dir: Path) -> Path:
    """The tiny fine-tuned model, trained once per test session (tests copy it)."""
    d = Path(tempfile.mkdtemp(prefix="tuneline-tiny-finetuned-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    with single_thread():
        return train_tiny(base_dir, make_split(200, seed=100), d / "finetuned")


def build_pipeline(root: Path, base_dir: Path) -> Paths:
    """Splits and a fine-tuned model under `root`: what calibrate needs."""
    paths = make_paths(root)
    write_splits(paths)
    shutil.copytree(finetuned_model(Path(base_dir)), Path(paths.models) / "finetuned")
    return paths


def base_params() -> BaseParams:
    return BaseParams(seed=0)


def task_params() -> ClassificationParams:
    return ClassificationParams(labels=LABELS)


def calibrated_probs(root: Path, split: str):
    """(split rows, label ids, calibrated probabilities) computed directly from the saved model and
    calibrator files: the reference the calibrate and evaluate stages are checked against."""
    from tuneline.evaluate.calibration import load_calibrated
    from tuneline.evaluate.inference import predict_logits
    from tuneline.train.models import load_finetuned

    finetuned, cal, _ = load_calibrated(root / "models/calibrated")
    ft = load_finetuned(finetuned)
    rows = pd.read_parquet(root / "data/splits" / f"{split}.parquet")
    with single_thread():
        logits = predict_logits(ft.model, ft.tokenizer, rows["text"].tolist(), ft.meta["max_length"])
    return rows, rows["label"].map({lab: i for i, lab in enumerate(LABELS)}).to_numpy(), cal.transform(logits)

