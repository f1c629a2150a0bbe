"""Dynamic int8 quantization for CPU inference, with torch's own eager API.

`torch.ao.quantization.quantize_dynamic` replaces every nn.Linear by a dynamically quantized
one (int8 weights, activations quantized on the fly per batch; fbgemm/x86 kernels) and, with
`embeddings=True`, every vocabulary-sized nn.Embedding by a weight-only 8-bit embedding with per-row float scale
and offset (on a 30k-token vocabulary the embeddings are half of a MiniLM; without them the
model shrinks only ~1.6x). torch 2.13 marks torch.ao.quantization deprecated in favour of
torchao, but the eager API works and is what this stage pins; its warnings are silenced here.

Saving without pickling arbitrary objects: the quantized model's state_dict holds only tensors
(quantized tensors included), dtypes and tuples, which `torch.load(weights_only=True)` accepts.
Loading rebuilds the fp32 architecture from its config (random weights, never read), quantizes
that skeleton with the same recipe and loads the saved int8 state_dict into it: the result is
bit-identical to the model that was saved, and the file holds the int8 weights (~4x smaller).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from tuneline.data.records import write_atomic

MIN_VOCAB = 1000
"""Embedding tables with at least this many rows are quantized (vocabularies, not positions)."""


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        yield


def quantize_int8(model: nn.Module, *, per_channel: bool = True, embeddings: bool = True) -> nn.Module:
    """A dynamically quantized copy of `model` (the fp32 model is untouched), in eval mode."""
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    linear = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec: dict[str, object] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            spec[name] = linear
        elif embeddings and isinstance(m, nn.Embedding) and m.num_embeddings >= MIN_VOCAB:
            # only vocabulary tables: the quantized embedding op needs contiguous indices, and
            # BERT passes an expanded (non-contiguous) buffer to its tiny token-type table
            spec[name] = float_qparams_weight_only_qconfig
    src = copy.deepcopy(model).eval()
    with _quiet():
        q = quantize_dynamic(src, spec, dtype=torch.qint8, inplace=True)
    return q.eval()


def save_int8(qmodel: nn.Module, path: str | Path) -> Path:
    """Write the quantized state_dict atomically (loadable with weights_only=True)."""
    state = qmodel.state_dict()
    with _quiet():
        return write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_int8(skeleton: nn.Module, path: str | Path, *, per_channel: bool = True, embeddings: bool = True) -> nn.Module:
    """Quantize the fp32 `skeleton` with the saved recipe and load the int8 weights into it."""
    q = quantize_int8(skeleton, per_channel=per_channel, embeddings=embeddings)
    with _quiet():
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        q.load_state_dict(state, strict=True)
    return q.eval()


def is_quantized(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
