"""Pruning: global unstructured magnitude sparsity and structured attention-head removal.

Unstructured: `torch.nn.utils.prune.global_unstructured` (L1 magnitude, one threshold across
all prunable weights) puts a mask on every Linear weight of the encoder (the classifier head is
left dense). During the recovery fine-tune the masks stay applied by prune's forward hooks, so
pruned weights stay exactly zero; `make_permanent` then folds the masks into the weights.
Zeros in a dense tensor do not make a model smaller or faster on a CPU by themselves; the gain
is what a sparse runtime or compression of the file would make of them (the stage reports it).

Structured: head importance as in Michel et al. (2019), "Are Sixteen Heads Really Better than
One?": the expected absolute gradient of the loss with respect to a gate on each head's output,
normalised per layer. The least important heads (global ranking, at least one kept per layer)
are removed by slicing the query/key/value rows and the attention-output columns, so the model
really shrinks. transformers 5 no longer prunes heads itself; BERT-style attention (query, key,
value; attention.output.dense) reshapes by head size, so sliced layers run unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from tuneline.compress.distillation import encoder_layers
from tuneline.errors import UserError


class PruningError(UserError, ValueError):
    """A model cannot be pruned as asked."""


# --------------------------------------------------------------------------- unstructured
def prunable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(name, module) of every nn.Linear inside the encoder layers (classifier and pooler stay dense)."""
    layers = encoder_layers(model)
    return [(f"layer.{i}.{n}", m) for i, layer in enumerate(layers) for n, m in layer.named_modules()
            if isinstance(m, nn.Linear)]


def magnitude_prune(model: nn.Module, sparsity: float) -> None:
    """Global L1 (magnitude) pruning of encoder Linear weights to `sparsity`, masks left in place."""
    if not 0.0 <= sparsity < 1.0:
        raise PruningError(f"sparsity must be in [0, 1), got {sparsity}")
    targets = [(m, "weight") for _, m in prunable_linears(model)]
    if not targets:
        raise PruningError(f"{type(model).__name__}: no Linear weights found in the encoder layers")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))


def make_permanent(model: nn.Module) -> None:
    """Fold every pruning mask into its weight (zeros become plain zeros; hooks removed)."""
    for m in model.modules():
        for name in [k[: -len("_orig")] for k, _ in list(m.named_parameters(recurse=False)) if k.endswith("_orig")]:
            prune.remove(m, name)


def sparsity(model: nn.Module) -> dict[str, float | int]:
    """Real zeros in the model as it is now: over the prunable weights and over every parameter."""
    pz = pn = 0
    for _, m in prunable_linears(model):
        w = m.weight  # with masks in place this is weight_orig * mask
        pz += int((w == 0).sum())
        pn += w.numel()
    az = an = 0
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if name.endswith("_orig"):  # a mask is in place: count the masked weight
                p = getattr(m, name[: -len("_orig")])
            az += int((p == 0).sum())
            an += p.numel()
    return {"prunable_sparsity": pz / pn if pn else 0.0, "prunable_weights": pn,
            "overall_sparsity": az / an if an else 0.0, "params": an, "nonzero_params": an - az}


# --------------------------------------------------------------------------- heads
def _attention(layer: nn.Module) -> tuple[nn.Module, nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    """(self-attention module, query, key, value, output projection) of a BERT-style layer."""
    att = getattr(layer, "attention", None)
    sa, out = getattr(att, "self", None), getattr(getattr(att, "output", None), "dense", None)
    if sa is None or out is None or not all(hasattr(sa, k) for k in ("query", "key", "value", "attention_head_size")):
        raise PruningError(f"{type(layer).__name__}: head pruning supports BERT-style attention "
                           "(attention.self.query/key/value, attention.output.dense); prune by magnitude instead")
    return sa, sa.query, sa.key, sa.value, out


def head_counts(model: nn.Module) -> list[int]:
    """Number of attention heads per encoder layer."""
    return [int(_attention(layer)[1].out_features // _attention(layer)[0].attention_head_size)
            for layer in encoder_layers(model)]


def head_importance(model: nn.Module,
                    batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]) -> list[np.ndarray]:
    """Per layer, the importance of each head: E|dL/d gate_h|, L2-normalised per layer (Michel et al.)."""
    layers = encoder_layers(model)
    counts = head_counts(model)
    gates = [torch.ones(h, requires_grad=True) for h in counts]
    handles = []
    for layer, gate in zip(layers, gates):
        sa, _, _, _, out = _attention(layer)
        d = sa.attention_head_size

        def hook(_mod, inputs, gate=gate, d=d):
            x = inputs[0]
            shape = x.shape
            return (x.view(*shape[:-1], -1, d).mul(gate.view(-1, 1)).view(shape),) + tuple(inputs[1:])

        handles.append(out.register_forward_pre_hook(hook))
    imp = [torch.zeros(h) for h in counts]
    was_training = model.training
    model.eval()  # no dropout: the gradient measures the heads, not the noise
    try:
        for batch, y in batches:
            loss = nn.functional.cross_entropy(model(**batch).logits, y)
            grads = torch.autograd.grad(loss, gates)
            for acc, g in zip(imp, grads):
                acc += g.abs()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for v in imp:
        v = v.numpy().astype(np.float64)
        norm = np.linalg.norm(v)
        out.append(v / norm if norm > 0 else v)
    return out


def heads_to_remove(importance: Sequence[np.ndarray], fraction: float) -> dict[int, list[int]]:
    """The globally least important `fraction` of heads, keeping at least one head per layer."""
    if not 0.0 <= fraction < 1.0:
        raise PruningError(f"head fraction must be in [0, 1), got {fraction}")
    total = sum(len(v) for v in importance)
    n_remove = round(fraction * total)
    ranked = sorted((float(s), li, h) for li, v in enumerate(importance) for h, s in enumerate(v))
    left = [len(v) for v in importance]
    remove: dict[int, list[int]] = {}
    for _, li, h in ranked:
        if n_remove == 0:
            break
        if left[li] <= 1:
            continue
        remove.setdefault(li, []).append(h)
        left[li] -= 1
        n_remove -= 1
    return {li: sorted(hs) for li, hs in sorted(remove.items())}


def _slice_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (dim=0, outputs) or columns (dim=1, inputs) `idx`."""
    w = lin.weight.detach().index_select(dim, idx).clone()
    b = lin.bias.detach().clone() if lin.bias is not None else None
    if dim == 0 and b is not None:
        b = b.index_select(0, idx).clone()
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype)
    new.weight = nn.Parameter(w, requires_grad=lin.weight.requires_grad)
    if b is not None:
        new.bias = nn.Parameter(b, requires_grad=lin.bias.requires_grad)
    return new


def remove_heads(model: nn.Module, remove: dict[int, Sequence[int]]) -> dict[int, list[int]]:
    """Remove heads in place (indices are the layer's current heads); returns the kept heads per layer."""
    layers = encoder_layers(model)
    kept: dict[int, list[int]] = {}
    for li, layer in enumerate(layers):
        sa, q, k, v, out = _attention(layer)
        d = sa.attention_head_size
        n = q.out_features // d
        gone = {int(h) for h in remove.get(li, [])}
        if any(h < 0 or h >= n for h in gone):
            raise PruningError(f"layer {li}: head indices {sorted(gone)} out of range 0..{n - 1}")
        keep = [h for h in range(n) if h not in gone]
        if not keep:
            raise PruningError(f"layer {li}: cannot remove every head")
        kept[li] = keep
        if not gone:
            continue
        idx = torch.tensor([h * d + j for h in keep for j in range(d)], dtype=torch.long)
        sa.query, sa.key, sa.value = (_slice_linear(x, idx, 0) for x in (q, k, v))
        layer.attention.output.dense = _slice_linear(out, idx, 1)
        sa.num_attention_heads = len(keep)
        sa.all_head_size = len(keep) * d
    return kept


def apply_kept_heads(model: nn.Module, kept: dict[int | str, Sequence[int]]) -> None:
    """Reshape a freshly built full model to a saved head layout (`kept` from remove_heads)."""
    counts = head_counts(model)
    remove = {int(li): [h for h in range(counts[int(li)]) if h not in set(hs)] for li, hs in kept.items()}
    remove_heads(model, remove)
