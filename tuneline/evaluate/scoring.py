"""One way to score a classifier on a split: logits -> (calibrated) probabilities -> metrics.

Used by the evaluate stage (the headline), the compress stage (teacher and every variant) and the
retraining gate, so the same model on the same rows gets the same numbers everywhere:
  logits   tuneline.evaluate.inference.logits (length-sorted batches, no padding beyond each batch's longest)
  probs    the calibrator's transform of the logits, or their softmax without a calibrator
  metrics  tuneline.evaluate.metrics.classification_metrics (the `evaluate` library with our metric modules)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from tuneline.evaluate.calibration import Calibrator, softmax
from tuneline.evaluate.inference import Tokenized, logits, tokenize
from tuneline.evaluate.metrics import classification_metrics

HEADLINE = ("accuracy", "macro_f1", "ece", "nll", "brier", "roc_auc", "pr_auc")
"""The metrics every caller reports first (roc_auc and pr_auc exist for two labels only)."""


@dataclass
class Scored:
    logits: np.ndarray
    """float32 [rows, labels], row i for text i."""
    probs: np.ndarray
    """Calibrated probabilities (softmax when there is no calibrator)."""
    metrics: dict
    """classification_metrics of probs against the true labels."""

    def headline(self) -> dict:
        return {k: self.metrics[k] for k in HEADLINE if k in self.metrics}


def score_logits(z: np.ndarray, y: Sequence, labels: Sequence[str], calibrator: Calibrator | None = None, *,
                 n_bootstrap: int = 0, level: float = 0.95, seed: int = 0, n_bins: int = 15) -> Scored:
    """Metrics of logits `z` against true labels `y` (class ids or label strings)."""
    probs = calibrator.transform(z) if calibrator is not None else softmax(z)
    m = classification_metrics(y, probs, list(labels), n_bootstrap=n_bootstrap,
                               level=level, seed=seed, n_bins=n_bins)
    return Scored(logits=z, probs=probs, metrics=m)


def score_split(model: nn.Module, data: Tokenized, y: Sequence, labels: Sequence[str],
                calibrator: Calibrator | None = None, *, batch_size: int = 64, n_bootstrap: int = 0,
                level: float = 0.95, seed: int = 0, n_bins: int = 15) -> Scored:
    """Score `model` on tokenized texts with true labels `y` (see the module doc)."""
    z = logits(model, data, batch_size)
    return score_logits(z, y, labels, calibrator, n_bootstrap=n_bootstrap, level=level, seed=seed, n_bins=n_bins)


def score_texts(model: nn.Module, tokenizer, texts: Sequence[str], y: Sequence, labels: Sequence[str],
                calibrator: Calibrator | None = None, *, max_length: int, **kw) -> Scored:
    """`score_split` of raw texts (tokenized once, truncated to max_length)."""
    return score_split(model, tokenize(tokenizer, list(texts), max_length), y, labels, calibrator, **kw)
