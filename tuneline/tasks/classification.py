"""Fine-tuning a sequence classifier with the train params: the classification side of the loop.

`fit` maps TrainParams onto tuneline.train.loop (the one training loop: batching, optimizer,
schedule, device and precision, freezing, unfreezing, early stopping, checkpoints) and supplies
what is classification-specific: the cross-entropy loss (class-weighted or resampled, label
smoothing) and the validation metrics that early stopping watches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from tuneline.evaluate.inference import Tokenized, predict_logits, tokenize
from tuneline.params import TrainParams
from tuneline.train.loop import Batch, LoopResult, LoopSettings, train


def loop_settings(p: TrainParams) -> LoopSettings:
    """The loop's settings from the train params (the method's own learning rate)."""
    return LoopSettings(
        epochs=p.epochs, batch_size=p.batch_size, lr=p.method_lr(), weight_decay=p.weight_decay,
        layer_lr_decay=p.layer_lr_decay, schedule=p.schedule, warmup_ratio=p.warmup_ratio, max_steps=p.max_steps,
        grad_accum=p.grad_accum, max_grad_norm=p.max_grad_norm, length_grouping=p.length_grouping,
        resample=p.class_balance == "resample", pad_to_multiple_of=p.pad_to_multiple_of,
        freeze_embeddings=p.freeze_embeddings, freeze_layers=p.freeze_layers, unfreeze_every=p.unfreeze_every,
        unfreeze_unit=p.unfreeze_unit, eval_every=p.eval_every, early_stopping_metric=p.early_stopping.metric,
        early_stopping_patience=p.early_stopping.patience, early_stopping_min_delta=p.early_stopping.min_delta,
        checkpoint_every=p.checkpoint_every, device=p.device, precision=p.precision, threads=p.threads,
        desc=f"train[{p.method}]")


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights n / (k * count), the 'balanced' rule (absent classes get 0)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return w


def cross_entropy(y: np.ndarray, weight: np.ndarray | None = None, label_smoothing: float = 0.0):
    """The classification loss for the loop: cross-entropy of the model's logits against y[rows]."""
    y_all = torch.tensor(np.asarray(y, dtype=np.int64))
    w = torch.tensor(weight, dtype=torch.float32) if weight is not None else None
    on: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        if batch.device not in on:
            on[batch.device] = (y_all.to(batch.device), w.to(batch.device) if w is not None else None)
        ys, ws = on[batch.device]
        logits = model(**batch.inputs).logits
        return nn.functional.cross_entropy(logits.float(), ys[torch.as_tensor(batch.rows, device=batch.device)],
                                           weight=ws, label_smoothing=label_smoothing)

    return loss


def evaluate(model: nn.Module, tokenizer, texts: list[str], y: np.ndarray, labels: list[str], max_length: int,
             batch_size: int) -> dict:
    """Validation loss, accuracy, macro F1 and per-label F1."""
    logits = predict_logits(model, tokenizer, texts, max_length, batch_size)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor(y)).item())
    pred = logits.argmax(1)
    per = f1_score(y, pred, labels=list(range(len(labels))), average=None, zero_division=0)
    return {"loss": round(loss, 6), "accuracy": round(float(accuracy_score(y, pred)), 6),
            "macro_f1": round(float(per.mean()), 6), "f1": {lab: round(float(f), 6) for lab, f in zip(labels, per)}}


def fit(model: nn.Module, tokenizer, train_texts: list[str], train_y: np.ndarray, val_texts: list[str],
        val_y: np.ndarray, labels: list[str], p: TrainParams, *, seed: int, checkpoint_dir: Path | None = None,
        fingerprint: str = "", progress: bool = True) -> LoopResult:
    """Train `model` in place and leave the best validation weights in it (eval mode)."""
    train_y = np.asarray(train_y, dtype=np.int64)
    val_y = np.asarray(val_y, dtype=np.int64)
    data: Tokenized = tokenize(tokenizer, train_texts, p.max_length)
    weight = class_weights(train_y, len(labels)) if p.class_balance == "weights" else None
    return train(model, data, cross_entropy(train_y, weight, p.label_smoothing), loop_settings(p), seed=seed,
                 labels=train_y,
                 evaluate=lambda m: evaluate(m, tokenizer, val_texts, val_y, labels, p.max_length, p.eval_batch_size),
                 checkpoint_dir=checkpoint_dir, fingerprint=fingerprint, progress=progress)
