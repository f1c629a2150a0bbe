"""Post-hoc calibration of a classifier's logits, fitted on held-out data.

Methods (Guo et al. 2017, "On Calibration of Modern Neural Networks"):
  temperature  one scalar T > 0: softmax(z / T). Keeps the argmax, so accuracy is unchanged.
  vector       per-class scale and shift: softmax(z * w + b); L2-pulled towards (1/T, 0).
  isotonic     one-vs-rest isotonic regression on the softmax probabilities (Zadrozny & Elkan
               2002), rows renormalized; two classes fit one map on the positive class.
  none         plain softmax (calibration switched off).

A fitted `Calibrator` is plain numbers: `save(dir)` writes `calibrator.json` (no pickle) and
`load_calibrator(dir)` reads it back. A calibrated model folder is that file plus `model.json`,
a pointer to the fine-tuned model it was fitted on (relative path + the folder's sha256), so
the pair is checked whenever it is loaded (`load_calibrated`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tuneline.data.assets import tree_sha256
from tuneline.data.records import write_json

CalibrationMethod = Literal["temperature", "vector", "isotonic", "none"]
METHODS: tuple[str, ...] = ("temperature", "vector", "isotonic", "none")
CALIBRATOR_FILE = "calibrator.json"
POINTER_FILE = "model.json"
FORMAT = "tuneline.calibrator/1"
TEMPERATURE_BOUNDS = (0.05, 100.0)
"""Search range of T; a fit that ends on a bound is reported as such (val data separable, or noise)."""


# --------------------------------------------------------------------------- softmax helpers
def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def _nll_and_grad(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of softmax(z) and its gradient w.r.t. z."""
    lp = log_softmax(z)
    n = len(y)
    nll = -lp[np.arange(n), y].mean()
    g = np.exp(lp)
    g[np.arange(n), y] -= 1.0
    return float(nll), g / n


# --------------------------------------------------------------------------- the calibrator
@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map from logits [n, k] to probabilities [n, k]."""

    method: str
    n_classes: int
    temperature: float = 1.0
    """temperature: the fitted T; vector: T of the temperature fit it started from; else 1."""
    weights: list[float] | None = None
    """vector: per-class scale w."""
    bias: list[float] | None = None
    """vector: per-class shift b."""
    isotonic: list[dict] | None = None
    """isotonic: per calibrated class {"class": id, "x": thresholds, "y": values} (np.interp between them)."""
    floor: float = 0.0
    """isotonic: smallest probability it outputs before renormalizing (0 allows infinite NLL)."""
    fit: dict = field(default_factory=dict)
    """What the fit saw: rows, NLL before/after on the fitting data, whether T hit a bound."""

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64, rows sum to 1)."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.n_classes:
            raise ValueError(f"logits must be [n, {self.n_classes}]; got {z.shape}")
        if self.method == "none":
            return softmax(z)
        if self.method == "temperature":
            return softmax(z / self.temperature)
        if self.method == "vector":
            return softmax(z * np.asarray(self.weights) + np.asarray(self.bias))
        if self.method == "isotonic":
            return self._isotonic(softmax(z))
        raise ValueError(f"unknown calibration method {self.method!r}; one of {METHODS}")

    def _isotonic(self, p: np.ndarray) -> np.ndarray:
        if self.n_classes == 2:
            m = self.isotonic[0]
            p1 = np.clip(np.interp(p[:, 1], m["x"], m["y"]), self.floor, 1 - self.floor)
            return np.stack([1 - p1, p1], axis=1)
        out = np.empty_like(p)
        for m in self.isotonic:
            out[:, m["class"]] = np.interp(p[:, m["class"]], m["x"], m["y"])
        out = np.maximum(out, self.floor)
        total = out.sum(axis=1, keepdims=True)
        # a row every map sends to 0 (only possible with floor 0) keeps its softmax
        return np.where(total > 0, out / np.where(total > 0, total, 1), p)

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "method": self.method, "n_classes": self.n_classes, "temperature": self.temperature}
        if self.method == "vector":
            d.update(weights=self.weights, bias=self.bias)
        if self.method == "isotonic":
            d.update(isotonic=self.isotonic, floor=self.floor)
        d["fit"] = self.fit
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a calibrator of format {FORMAT!r} (got {d.get('format')!r})")
        if d["method"] not in METHODS:
            raise ValueError(f"unknown calibration method {d['method']!r}; one of {METHODS}")
        return cls(
            method=d["method"],
            n_classes=int(d["n_classes"]),
            temperature=float(d.get("temperature", 1.0)),
            weights=d.get("weights"),
            bias=d.get("bias"),
            isotonic=d.get("isotonic"),
            floor=float(d.get("floor", 0.0)),
            fit=d.get("fit", {}),
        )

    def save(self, directory: str | Path) -> Path:
        """Write `<directory>/calibrator.json` atomically."""
        return write_json(self.to_dict(), Path(directory) / CALIBRATOR_FILE)


def load_calibrator(directory: str | Path) -> Calibrator:
    path = Path(directory) / CALIBRATOR_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the calibrate stage (dvc repro calibrate)")
    return Calibrator.from_dict(json.loads(path.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- fitting
def fit_temperature(logits: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
    """T minimizing the NLL of softmax(z / T); (T, hit_bound). NLL is convex in 1/T."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    lo, hi = 1 / TEMPERATURE_BOUNDS[1], 1 / TEMPERATURE_BOUNDS[0]
    res = minimize_scalar(
        lambda a: _nll_and_grad(z * a, y)[0], bounds=(lo, hi), method="bounded", options={"xatol": 1e-7}
    )
    a = float(res.x)
    best = _nll_and_grad(z * a, y)[0]
    # on a bound when the bound fits as well (e.g. a val split the model separates perfectly)
    hit = any(_nll_and_grad(z * b, y)[0] <= best + 1e-9 for b in (lo, hi))
    return 1.0 / a, hit


def fit_vector(logits: np.ndarray, y: np.ndarray, l2: float, t0: float) -> tuple[list[float], list[float]]:
    """w, b minimizing NLL(softmax(z * w + b)) + l2 * (|w - 1/t0|^2 + |b|^2), by L-BFGS."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    k = z.shape[1]
    w0 = np.full(k, 1.0 / t0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:k], theta[k:]
        nll, g = _nll_and_grad(z * w + b, y)
        loss = nll + l2 * (((w - w0) ** 2).sum() + (b**2).sum())
        grad = np.concatenate([(g * z).sum(axis=0) + 2 * l2 * (w - w0), g.sum(axis=0) + 2 * l2 * b])
        return loss, grad

    res = minimize(objective, np.concatenate([w0, np.zeros(k)]), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    return res.x[:k].tolist(), res.x[k:].tolist()


def fit_isotonic(logits: np.ndarray, y: np.ndarray) -> list[dict]:
    from sklearn.isotonic import IsotonicRegression

    p = softmax(logits)
    k = p.shape[1]
    maps = []
    for c in [1] if k == 2 else range(k):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(p[:, c], (y == c).astype(np.float64))
        maps.append({"class": int(c), "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
    return maps


def fit_calibrator(
    method: str, logits: np.ndarray, y: np.ndarray, *, vector_l2: float = 0.01, isotonic_floor: float = 1e-4
) -> Calibrator:
    """Fit `method` on held-out logits [n, k] and true class ids y [n] (never on training data)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; one of {METHODS}")
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need logits [n, k] and n labels, n > 0; got {z.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
    k = z.shape[1]
    fit = {"rows": len(y), "nll_before": _nll_and_grad(z, y)[0]}
    if method == "none":
        cal = Calibrator("none", k)
    else:
        t, hit = fit_temperature(z, y)
        fit["temperature_at_bound"] = hit
        if method == "temperature":
            cal = Calibrator("temperature", k, temperature=t)
        elif method == "vector":
            w, b = fit_vector(z, y, vector_l2, t)
            cal = Calibrator("vector", k, temperature=t, weights=w, bias=b)
        else:
            cal = Calibrator("isotonic", k, isotonic=fit_isotonic(z, y), floor=isotonic_floor)
    probs = cal.transform(z)
    fit["nll_after"] = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean())
    return Calibrator(**{**cal.__dict__, "fit": fit})


# --------------------------------------------------------------------------- calibrated model folder
def save_calibrated(
    directory: str | Path, calibrator: Calibrator, finetuned_dir: str | Path, labels: list[str]
) -> Path:
    """Write calibrator.json and model.json (pointer to the fine-tuned folder, with its sha256)."""
    directory, finetuned_dir = Path(directory), Path(finetuned_dir)
    calibrator.save(directory)
    pointer = {
        "finetuned": Path(os.path.relpath(finetuned_dir.resolve(), directory.resolve())).as_posix(),
        "finetuned_sha256": tree_sha256(finetuned_dir),
        "labels": list(labels),
        "calibrator": CALIBRATOR_FILE,
        "method": calibrator.method,
    }
    write_json(pointer, directory / POINTER_FILE)
    return directory


def load_calibrated(directory: str | Path, verify: bool = True) -> tuple[Path, Calibrator, dict]:
    """(fine-tuned model folder, calibrator, model.json) of a calibrated model folder.

    With verify, the fine-tuned folder must be the one the calibrator was fitted on (same sha256).
    """
    directory = Path(directory)
    path = directory / POINTER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the calibrate stage (dvc repro calibrate)")
    pointer = json.loads(path.read_text(encoding="utf-8"))
    finetuned = (directory / pointer["finetuned"]).resolve()
    if verify and tree_sha256(finetuned) != pointer["finetuned_sha256"]:
        raise ValueError(
            f"{finetuned} changed since the calibrator in {directory} was fitted on it; "
            f"rerun calibrate (dvc repro calibrate)"
        )
    return finetuned, load_calibrator(directory), pointer
