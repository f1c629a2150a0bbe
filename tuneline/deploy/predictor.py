"""A model folder ready to answer: fine-tuned classifier + calibrator -> calibrated probabilities.

A model folder is what the pipeline writes to ${paths.models} and what the registry keeps per
version: `finetuned/` (tuneline.train.models) and, when the pipeline calibrates, `calibrated/`
(tuneline.evaluate.calibration: calibrator.json + model.json, a pointer to the fine-tuned folder with its
sha256, checked on load). Without `calibrated/` the probabilities are the softmax of the logits,
and `calibrated` is False so callers can say so. Compressed variants load through
tuneline.deploy.serving.load_model (the API serves them; the gate never does).

Used by the API (apps.serve) and by the retraining gate, which scores a Predictor's model and
calibrator with tuneline.evaluate.scoring (the evaluate stage's code), so the gate judges a model
on the same numbers the evaluate stage reports.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class Predictor:
    version: str
    labels: list[str]
    max_length: int
    model: Any
    tokenizer: Any
    calibrator: Any | None = None
    meta: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def calibrated(self) -> bool:
        return self.calibrator is not None

    @classmethod
    def load(cls, model_dir: str | Path, version: str, cache_dir: str | Path | None = None,
             device: str | None = None) -> "Predictor":
        from tuneline.train.models import load_finetuned

        model_dir = Path(model_dir)
        finetuned, calibrator = model_dir / "finetuned", None
        if (model_dir / "calibrated").is_dir():
            from tuneline.evaluate.calibration import load_calibrated

            # checks that the calibrator was fitted on exactly this fine-tuned folder (sha256)
            finetuned, calibrator, _ = load_calibrated(model_dir / "calibrated", verify=True)
        ft = load_finetuned(finetuned, cache_dir=cache_dir, device=device)
        return cls(version=version, labels=list(ft.labels), max_length=int(ft.meta.get("max_length", 128)),
                   model=ft.model, tokenizer=ft.tokenizer, calibrator=calibrator, meta=dict(ft.meta))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """[len(texts), len(labels)] probabilities. One forward pass at a time per predictor:
        concurrent requests queue here instead of oversubscribing the CPU cores."""
        from tuneline.evaluate.inference import predict_logits

        if not len(texts):
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        with self._lock:
            logits = predict_logits(self.model, self.tokenizer, list(texts), self.max_length, batch_size=batch_size)
        logits = np.asarray(logits, dtype=np.float64)
        if self.calibrator is not None:
            return np.asarray(self.calibrator.transform(logits), dtype=np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

