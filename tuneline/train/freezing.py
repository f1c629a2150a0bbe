"""Layer numbering, layer-wise learning rates, freezing and gradual unfreezing.

Layers are numbered for LR decay and unfreezing: 0 = embeddings, k+1 = transformer layer k,
n_layers+1 = everything else (the head, the pooler, PEFT prompt encoders). Embeddings are
BERT-style `*.embeddings.*` and Llama-style `*.embed_tokens.*` (a tied LM head shares that weight,
so freezing the embeddings of a tied model freezes its output projection too).
"""

from __future__ import annotations

import re

from torch import nn

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")


def layer_index(name: str, n_layers: int) -> int:
    """0 = embeddings, k+1 = transformer layer k, n_layers+1 = head / pooler / prompt encoder."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)) + 1
    if (("embeddings." in name or "embed_tokens." in name)
            and "prompt_encoder" not in name and "prefix_encoder" not in name):
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


def unfreeze_stage(every: int, unit: str, step: int, epoch: int) -> int | None:
    """How many layers below the head are unfrozen (None: gradual unfreezing is off, every=0)."""
    if not every:
        return None
    return (step if unit == "steps" else epoch) // every


def set_trainable(model: nn.Module, trainable: set[str], stage: int | None, n_layers: int) -> None:
    """requires_grad = in `trainable` and (no unfreezing, or within the top `stage` layers below the head)."""
    lowest = -1 if stage is None else n_layers + 1 - stage
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable and layer_index(name, n_layers) >= lowest)
