"""Batched inference: class logits for a list of texts, in input order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def predict_logits(model: nn.Module, tokenizer, texts: list[str], max_length: int, batch_size: int = 64,
                   device: str | None = None) -> np.ndarray:
    """Logits float32 [len(texts), n_labels], row i for texts[i].

    Texts are tokenized once, sorted by length and batched so each batch pads only to its own
    longest text; rows are put back in input order. Runs under torch.inference_mode on `device`
    (default: where the model's weights are). The model's train/eval mode is left as it was found.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if device is not None:
        model.to(dev)
    n_labels = model.config.num_labels
    if not texts:
        return np.zeros((0, n_labels), dtype=np.float32)
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")
    pad_id = tokenizer.pad_token_id or 0
    out = np.empty((len(texts), n_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = pad_batch([ids[i] for i in rows], pad_id)
                logits = model(**{k: v.to(dev) for k, v in batch.items()}).logits
                out[rows] = logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def pad_batch(seqs: list[list[int]], pad_id: int, multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad token id lists to the longest (rounded up to `multiple_of`): input_ids + attention_mask."""
    width = max(len(s) for s in seqs)
    width = -(-width // multiple_of) * multiple_of
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
