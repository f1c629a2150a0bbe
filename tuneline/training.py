"""The training loop for sequence classifiers, with the controls of the fine-tuning playbook.

`fit` trains a model whose requires_grad flags already say what may train (see methods.py):
  - pre-tokenized texts, length-grouped batches (shuffled, then sorted within chunks of 50
    batches, batch order shuffled again), dynamic padding to a multiple of pad_to_multiple_of;
  - AdamW (fused on CUDA), weight decay off for biases and norms, layer-wise LR decay,
    warmup + schedule from transformers.get_scheduler, gradient accumulation and clipping;
  - bf16 autocast on CUDA, fp32 elsewhere; device picked automatically;
  - freezing (embeddings, lowest N layers) and gradual unfreezing (head first, then one more
    layer from the top every K steps or epochs);
  - class-weighted loss or class-balanced resampling, label smoothing;
  - evaluation on the validation split, early stopping with patience, best weights restored;
  - atomic checkpoints every N steps holding everything the rest of the run depends on
    (trainable weights, optimizer, schedule, RNG, position in the epoch, early-stopping state),
    so a run killed at any point and resumed ends with the same weights as an uninterrupted one.

Layers are numbered for LR decay and unfreezing: 0 = embeddings, k+1 = transformer layer k,
n_layers+1 = everything else (the head, the pooler, PEFT prompt encoders).
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from tuneline.inference import pad_batch, predict_logits
from tuneline.models import encoder_depth
from tuneline.params import TrainParams

log = logging.getLogger("tuneline.training")
CHECKPOINT = "checkpoint.pt"
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")


@dataclass
class FitResult:
    best: dict
    """Validation metrics of the best evaluation (whose weights the model now holds)."""
    best_step: int
    steps: int
    """Optimizer steps taken (over all sessions when resumed)."""
    epochs_run: int
    """Epochs started."""
    stopped_early: bool
    train_seconds: float
    """Wall time inside the loop, over all sessions (a resumed run adds the killed run's time)."""
    samples: int
    """Training texts processed, over all sessions."""
    samples_per_s: float
    """Training texts per second of forward/backward/step time in this session."""
    peak_memory_mb: float
    """Peak GPU memory allocated (CUDA) or peak resident memory of the process (CPU)."""
    device: str
    precision: str
    resumed_from: int
    """Step the run resumed from; 0 for a fresh run."""
    curve: list[dict] = field(default_factory=list)
    """One row per optimizer step: step, epoch, loss, lr."""
    evals: list[dict] = field(default_factory=list)
    """One row per evaluation: step, epoch and the validation metrics."""


# --------------------------------------------------------------------------- device
def pick_device(choice: str = "auto") -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: on request, or `auto` on a CUDA device that supports it."""
    if precision == "bf16":
        return True
    return precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------- layers, LR, freezing
def layer_index(name: str, n_layers: int) -> int:
    """0 = embeddings, k+1 = transformer layer k, n_layers+1 = head / pooler / prompt encoder."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)) + 1
    if "embeddings." in name and "prompt_encoder" not in name and "prefix_encoder" not in name:
        return 0
    return n_layers + 1


def param_groups(named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float, layer_decay: float,
                 n_layers: int) -> list[dict]:
    """AdamW groups: per layer, lr * layer_decay**(distance from the top); no decay on 1-d weights."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        layer = layer_index(name, n_layers)
        decay = param.ndim >= 2
        g = groups.setdefault((layer, decay), {
            "params": [], "names": [], "layer": layer,
            "lr": lr * layer_decay ** (n_layers + 1 - layer),
            "weight_decay": weight_decay if decay else 0.0,
        })
        g["params"].append(param)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def apply_freezing(trainable: set[str], n_layers: int, embeddings: bool, lowest: int) -> set[str]:
    """The trainable names minus the frozen embeddings and lowest `lowest` layers."""
    if lowest > n_layers:
        raise ValueError(f"train.freeze_layers={lowest} but the model has only {n_layers} layers")
    keep = set()
    for name in trainable:
        layer = layer_index(name, n_layers)
        if (embeddings and layer == 0) or 1 <= layer <= lowest:
            continue
        keep.add(name)
    return keep


def unfreeze_stage(p: TrainParams, step: int, epoch: int) -> int | None:
    """How many layers below the head are unfrozen (None: gradual unfreezing is off)."""
    if not p.unfreeze_every:
        return None
    return (step if p.unfreeze_unit == "steps" else epoch) // p.unfreeze_every


def set_trainable(model: nn.Module, trainable: set[str], stage: int | None, n_layers: int) -> None:
    """requires_grad = in `trainable` and (no unfreezing, or within the top `stage` layers below the head)."""
    lowest = -1 if stage is None else n_layers + 1 - stage
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable and layer_index(name, n_layers) >= lowest)


# --------------------------------------------------------------------------- data
def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights n / (k * count), the 'balanced' rule (absent classes get 0)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return w


def epoch_batches(lengths: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epoch: int,
                  length_grouping: bool = True, resample: bool = False, chunk_batches: int = 50) -> list[np.ndarray]:
    """Row indices of every batch of one epoch; a pure function of (seed, epoch), so a resumed
    run sees the same batches. resample draws len(labels) rows with each class equally likely."""
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    if resample:
        counts = np.bincount(labels)
        w = 1.0 / counts[labels]
        order = rng.choice(n, size=n, replace=True, p=w / w.sum())
    else:
        order = rng.permutation(n)
    if not length_grouping:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    batches = []
    chunk = batch_size * chunk_batches
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# --------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Module, tokenizer, texts: list[str], y: np.ndarray, labels: list[str], max_length: int,
             batch_size: int) -> dict:
    """Validation loss, accuracy, macro F1 and per-label F1."""
    logits = predict_logits(model, tokenizer, texts, max_length, batch_size)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor(y)).item())
    pred = logits.argmax(1)
    per = f1_score(y, pred, labels=list(range(len(labels))), average=None, zero_division=0)
    return {"loss": round(loss, 6), "accuracy": round(float(accuracy_score(y, pred)), 6),
            "f1_macro": round(float(per.mean()), 6), "f1": {lab: round(float(f), 6) for lab, f in zip(labels, per)}}


def _score(metrics: dict, metric: str) -> float:
    return -metrics["loss"] if metric == "loss" else metrics[metric]


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file, then rename: a kill leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it belongs to this run (same fingerprint), else None."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file from an older, non-atomic writer, or another torch
        log.warning("ignoring unreadable checkpoint %s (%s)", path, e)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: written for other params or data", path)
        return None
    return state


# --------------------------------------------------------------------------- the loop
def fit(model: nn.Module, tokenizer, train_texts: list[str], train_y: np.ndarray, val_texts: list[str],
        val_y: np.ndarray, labels: list[str], p: TrainParams, *, seed: int, checkpoint_dir: Path | None = None,
        fingerprint: str = "", progress: bool = True) -> FitResult:
    """Train `model` in place and leave the best validation weights in it (eval mode). See the module doc."""
    threads = torch.get_num_threads()
    if p.threads:
        torch.set_num_threads(p.threads)
    try:
        return _fit(model, tokenizer, train_texts, train_y, val_texts, val_y, labels, p, seed, checkpoint_dir,
                    fingerprint, progress)
    finally:
        torch.set_num_threads(threads)


def _fit(model, tokenizer, train_texts, train_y, val_texts, val_y, labels, p, seed, checkpoint_dir, fingerprint,
         progress) -> FitResult:
    device = pick_device(p.device)
    bf16 = use_bf16(p.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device)
    n_layers = encoder_depth(model)
    named = dict(model.named_parameters())
    trainable = {n for n, q in named.items() if q.requires_grad}
    trainable = apply_freezing(trainable, n_layers, p.freeze_embeddings, p.freeze_layers)
    if not trainable:
        raise ValueError("nothing to train: the method and the freeze settings leave no trainable weight")
    ordered = [(n, q) for n, q in named.items() if n in trainable]
    lr = p.method_lr()
    optimizer = torch.optim.AdamW(param_groups(ordered, lr, p.weight_decay, p.layer_lr_decay, n_layers), lr=lr,
                                  fused=True if device.type == "cuda" else None)

    train_y = np.asarray(train_y, dtype=np.int64)
    val_y = np.asarray(val_y, dtype=np.int64)
    ids = tokenizer(list(train_texts), truncation=True, max_length=p.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    pad_id = tokenizer.pad_token_id or 0
    n_batches = math.ceil(len(ids) / p.batch_size)
    steps_per_epoch = math.ceil(n_batches / p.grad_accum)
    total = p.epochs * steps_per_epoch
    if p.max_steps:
        total = min(total, p.max_steps)
    scheduler = get_scheduler(p.schedule, optimizer, num_warmup_steps=round(p.warmup_ratio * total),
                              num_training_steps=total)
    weight = None
    if p.class_balance == "weights":
        weight = torch.tensor(class_weights(train_y, len(labels)), dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=p.label_smoothing)

    st = {"step": 0, "epoch": 0, "micro": 0, "best_score": None, "best_step": 0, "best": {}, "bad_evals": 0,
          "stopped_early": False, "samples": 0, "train_seconds": 0.0, "curve": [], "evals": []}
    best_state: dict[str, torch.Tensor] = {}
    ckpt_path = checkpoint_dir / CHECKPOINT if checkpoint_dir is not None else None
    resumed_from = 0
    ck = load_checkpoint(ckpt_path, fingerprint) if ckpt_path is not None and p.checkpoint_every else None
    if ck is not None:
        if set(ck["params"]) != trainable:
            raise RuntimeError(f"{ckpt_path}: holds other weights than this model trains; delete it to start over")
        with torch.no_grad():
            for n, t in ck["params"].items():
                named[n].copy_(t)
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        best_state = ck["best_state"]
        st.update(ck["loop"])
        resumed_from = st["step"]
        log.info("resuming from %s at step %d/%d (epoch %d)", ckpt_path, st["step"], total, st["epoch"] + 1)

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {
            "fingerprint": fingerprint,
            "params": {n: named[n].detach().cpu().clone() for n in ordered_names},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "best_state": best_state, "loop": st,
        })

    ordered_names = [n for n, _ in ordered]
    set_trainable(model, trainable, unfreeze_stage(p, st["step"], st["epoch"]), n_layers)
    model.train()
    session_samples, session_step_time = 0, 0.0
    t_start = time.perf_counter()
    t_base = st["train_seconds"]
    bar = tqdm(total=total, initial=st["step"], disable=not progress, desc=f"train[{p.method}]", unit="step",
               dynamic_ncols=True, mininterval=1.0)
    while st["epoch"] < p.epochs and st["step"] < total and not st["stopped_early"]:
        batches = epoch_batches(lengths, train_y, p.batch_size, seed, st["epoch"], p.length_grouping,
                                p.class_balance == "resample")
        while st["micro"] < len(batches) and st["step"] < total:
            t0 = time.perf_counter()
            chunk = batches[st["micro"]:st["micro"] + p.grad_accum]
            n_chunk = sum(len(b) for b in chunk)
            step_loss = 0.0
            for rows in chunk:
                batch = pad_batch([ids[i] for i in rows], pad_id, p.pad_to_multiple_of)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                y = torch.from_numpy(train_y[rows]).to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(**batch).logits
                loss = loss_fn(logits.float(), y) * (len(rows) / n_chunk)
                loss.backward()
                step_loss += float(loss.detach())
            if p.max_grad_norm:
                nn.utils.clip_grad_norm_([q for q in named.values() if q.grad is not None], p.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            session_step_time += time.perf_counter() - t0
            session_samples += n_chunk
            st["step"] += 1
            st["micro"] += len(chunk)
            st["samples"] += n_chunk
            st["curve"].append({"step": st["step"], "epoch": round(st["epoch"] + st["micro"] / len(batches), 4),
                                "loss": round(step_loss, 6), "lr": scheduler.get_last_lr()[-1]})
            if p.unfreeze_unit == "steps":
                set_trainable(model, trainable, unfreeze_stage(p, st["step"], st["epoch"]), n_layers)
            end_of_epoch = st["micro"] >= len(batches)
            if ((p.eval_every and st["step"] % p.eval_every == 0) or (not p.eval_every and end_of_epoch)
                    or st["step"] == total):
                metrics = evaluate(model, tokenizer, val_texts, val_y, labels, p.max_length, p.eval_batch_size)
                st["evals"].append({"step": st["step"], "epoch": st["curve"][-1]["epoch"], **metrics})
                score = _score(metrics, p.early_stopping.metric)
                if st["best_score"] is None or score > st["best_score"] + p.early_stopping.min_delta:
                    st.update(best_score=score, best_step=st["step"], best=metrics, bad_evals=0)
                    best_state = {n: named[n].detach().cpu().clone() for n in ordered_names}
                else:
                    st["bad_evals"] += 1
                    if p.early_stopping.patience and st["bad_evals"] >= p.early_stopping.patience:
                        st["stopped_early"] = True
                bar.set_postfix({f"val_{p.early_stopping.metric}": metrics[p.early_stopping.metric]}, refresh=False)
            st["train_seconds"] = t_base + time.perf_counter() - t_start
            bar.update(1)
            if st["stopped_early"]:
                break
            if ckpt_path is not None and p.checkpoint_every and st["step"] % p.checkpoint_every == 0 \
                    and st["step"] < total:
                checkpoint()
        if st["micro"] >= len(batches):
            st["epoch"] += 1
            st["micro"] = 0
            if p.unfreeze_unit == "epochs":
                set_trainable(model, trainable, unfreeze_stage(p, st["step"], st["epoch"]), n_layers)
    bar.close()
    with torch.no_grad():
        for n, t in best_state.items():
            named[n].copy_(t.to(named[n].device))
    set_trainable(model, trainable, None, n_layers)
    model.eval()
    epochs_run = st["epoch"] + (1 if st["micro"] else 0)
    return FitResult(
        best=st["best"], best_step=st["best_step"], steps=st["step"], epochs_run=epochs_run,
        stopped_early=st["stopped_early"], train_seconds=round(st["train_seconds"], 3), samples=st["samples"],
        samples_per_s=round(session_samples / session_step_time, 2) if session_step_time else 0.0,
        peak_memory_mb=round(peak_memory_mb(device), 1), device=str(device), precision="bf16" if bf16 else "fp32",
        resumed_from=resumed_from, curve=st["curve"], evals=st["evals"])
