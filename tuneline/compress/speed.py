"""CPU latency and throughput of several models, measured interleaved under the same conditions.

On a shared or throttling machine, timing model A for a minute and then model B for a minute
measures the machine as much as the models. `benchmark` therefore rotates through the models
example by example (batch 1) and batch by batch (batch 32), so every model sees the same load,
and reports medians and 95th percentiles rather than means. Times cover the forward pass only
(tokenization is the same for every variant and is done beforehand); inputs are real texts.

  latency_ms_p50 / p95   ms per example at batch 1 (one text, padded to nothing)
  throughput_b32         examples per second at batch 32: 32 / median time of a random batch
                         of 32 texts padded to its longest text
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


def _encode_all(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def _batch(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def conditions(threads: int) -> dict[str, Any]:
    """What the numbers were measured on (so a reader can judge them)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"device": "cpu", "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": threads,
            "torch": torch.__version__, "quantized_engine": torch.backends.quantized.engine,
            "load_avg_1m_before": round(load[0], 2)}


@torch.inference_mode()
def benchmark(
    models: Mapping[str, tuple[nn.Module, Any]],
    texts: Sequence[str],
    *,
    max_length: int = 128,
    batch1_examples: int = 200,
    batch32_batches: int = 20,
    batch_size: int = 32,
    warmup: int = 3,
    threads: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Time every model on the same inputs, interleaved; returns {"models": {name: stats}, "conditions": {...}}.

    `models` maps a name to (eval-mode model, tokenizer). threads=0 keeps torch's default.
    """
    if not models:
        raise ValueError("benchmark: no models given")
    if not texts:
        raise ValueError("benchmark: no texts given")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        cond = conditions(torch.get_num_threads())
        rng = np.random.default_rng(seed)
        names = list(models)
        encoded: dict[int, list[list[int]]] = {}
        for model, tok in models.values():
            model.eval()
            if id(tok) not in encoded:
                encoded[id(tok)] = _encode_all(tok, texts, max_length)
        pads = {n: (models[n][1].pad_token_id or 0) for n in names}
        ids = {n: encoded[id(models[n][1])] for n in names}

        one = rng.choice(len(texts), size=batch1_examples, replace=len(texts) < batch1_examples)
        many = [rng.choice(len(texts), size=batch_size, replace=len(texts) < batch_size)
                for _ in range(batch32_batches)]
        for n in names:  # warm-up: first calls allocate and select kernels
            for i in one[:warmup]:
                models[n][0](**_batch([ids[n][i]], pads[n]))
            if many:
                models[n][0](**_batch([ids[n][i] for i in many[0]], pads[n]))

        lat: dict[str, list[float]] = {n: [] for n in names}
        bt: dict[str, list[float]] = {n: [] for n in names}
        total = batch1_examples + batch32_batches
        with tqdm(total=total, desc="latency", leave=False) as bar:
            for r, i in enumerate(one):
                for n in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
                    b = _batch([ids[n][i]], pads[n])
                    t0 = time.perf_counter()
                    models[n][0](**b)
                    lat[n].append(time.perf_counter() - t0)
                bar.update(1)
            for r, rows in enumerate(many):
                for n in names[r % len(names):] + names[: r % len(names)]:
                    b = _batch([ids[n][i] for i in rows], pads[n])
                    t0 = time.perf_counter()
                    models[n][0](**b)
                    bt[n].append(time.perf_counter() - t0)
                bar.update(1)
        out = {}
        for n in names:
            a = np.asarray(lat[n]) * 1000.0
            b = np.asarray(bt[n])
            out[n] = {
                "latency_ms_p50": float(np.percentile(a, 50)) if len(a) else None,
                "latency_ms_p95": float(np.percentile(a, 95)) if len(a) else None,
                "throughput_b32": float(batch_size / np.median(b)) if len(b) else None,
                "batch32_ms_p50": float(np.median(b) * 1000.0) if len(b) else None,
            }
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        cond.update({"batch1_examples": batch1_examples, "batch32_batches": batch32_batches,
                     "batch_size": batch_size, "max_length": max_length, "warmup": warmup,
                     "load_avg_1m_after": round(load[0], 2), "interleaved": True,
                     "timed": "forward pass only (tokenized beforehand), torch.inference_mode"})
        return {"models": out, "conditions": cond}
    finally:
        torch.set_num_threads(old_threads)
