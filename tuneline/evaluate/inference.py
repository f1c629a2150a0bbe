"""Tokenized texts and batched inference: class logits for a list of texts, in input order.

`Tokenized` is what both the training loop (tuneline.train.loop) and inference consume: texts
tokenized once, unpadded, padded per batch by `pad_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Tokenized:
    """Texts tokenized once, unpadded: one list of token ids per text."""

    input_ids: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)

    def batch(self, rows: Sequence[int], multiple_of: int = 1) -> dict[str, torch.Tensor]:
        """input_ids + attention_mask of `rows`, right-padded to their longest (rounded up to `multiple_of`)."""
        return pad_batch([self.input_ids[i] for i in rows], self.pad_id, multiple_of)

    def head(self, n: int) -> "Tokenized":
        """The first n texts."""
        return Tokenized(self.input_ids[:n], self.pad_id)


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> Tokenized:
    """Tokenize once (truncated to max_length, no padding); pad id 0 when the tokenizer has none."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"] if len(texts) else []
    return Tokenized(input_ids=ids, pad_id=tokenizer.pad_token_id or 0)


def logits(model: nn.Module, data: Tokenized, batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """Logits float32 [len(data), n_labels], row i for text i.

    Texts are sorted by length and batched so each batch pads only to its own longest text; rows
    are put back in input order. Runs under torch.inference_mode on `device` (default: where the
    model's weights are). The model's train/eval mode is left as it was found.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if device is not None:
        model.to(dev)
    n_labels = model.config.num_labels
    if not len(data):
        return np.zeros((0, n_labels), dtype=np.float32)
    order = np.argsort(data.lengths, kind="stable")
    out = np.empty((len(data), n_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = data.batch(rows)
                out[rows] = model(**{k: v.to(dev) for k, v in batch.items()}).logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def predict_logits(model: nn.Module, tokenizer, texts: list[str], max_length: int, batch_size: int = 64,
                   device: str | None = None) -> np.ndarray:
    """`logits` of raw texts: tokenized once (truncated to max_length), then batched by length."""
    return logits(model, tokenize(tokenizer, texts, max_length), batch_size, device)


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
