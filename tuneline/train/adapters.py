"""Houlsby bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP").

An adapter is a small residual MLP, `h + up(act(down(h)))`, placed right after a sublayer's output
projection (the attention output and the feed-forward output of every transformer layer), before
the residual connection and layer norm. `up` starts at zero, so a freshly inserted adapter is the
identity and the model computes exactly what the base computed until training moves it.
PEFT has no bottleneck adapters and the `adapters` package pins an older transformers, so this
module inserts them itself: the matching `nn.Linear` is wrapped in `AdaptedLinear`, whose state
keys are `<name>.base.*` (the original weights) and `<name>.adapter.*` (the new ones).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers.activations import ACT2FN


class Adapter(nn.Module):
    """h -> h + up(act(down(h))), with `up` zero-initialized (identity at the start)."""

    def __init__(self, dim: int, bottleneck: int, activation: str = "gelu") -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = ACT2FN[activation]
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class AdaptedLinear(nn.Module):
    """A Linear layer followed by an adapter on its output."""

    def __init__(self, base: nn.Linear, adapter: Adapter) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def add_adapters(model: nn.Module, bottleneck: int, target_modules: str, activation: str = "gelu") -> list[str]:
    """Wrap every nn.Linear whose qualified name fully matches `target_modules` with an adapter.

    Returns the wrapped module names. Raises ValueError when nothing matches (a wrong regex
    would otherwise silently train only the head) or when a module already has one.
    """
    pattern = re.compile(target_modules)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
    if not names:
        raise ValueError(f"adapter target_modules {target_modules!r} matches no nn.Linear in "
                         f"{type(model).__name__}; module names look like "
                         f"{[n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:4]}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        adapter = Adapter(base.out_features, bottleneck, activation).to(base.weight.device, base.weight.dtype)
        setattr(parent, child, AdaptedLinear(base, adapter))
    return names


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of every adapter parameter in `model`."""
    return [n for n, _ in model.named_parameters() if ".adapter." in f".{n}"]
