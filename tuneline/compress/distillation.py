"""Knowledge distillation: a shallower student initialised from the teacher, trained on its logits.

The default student is DistilBERT-style: a copy of the teacher that keeps a subset of its
transformer layers (every other one by default), so embeddings, the kept layers, the pooler and
the classifier start from the teacher's fine-tuned weights. The loss is

    kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - kd_weight) * CE(s, y)
    [+ hidden_weight * MSE(student hidden states, teacher hidden states)]

with the teacher's logits computed once (no dropout) before training. Hidden-state matching is
optional and only possible when both hidden sizes agree; student layer j is matched to the
teacher layer at the same relative depth (round((j+1) * L_teacher / L_student)).

Training goes through tuneline.train.loop, the one training loop, with `kd_loss` as its loss:
distillation (`train_with_kd`) and the recovery fine-tune after pruning (masks stay applied
through torch.nn.utils.prune hooks) use it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tuneline.errors import UserError
from tuneline.evaluate.inference import Tokenized
from tuneline.train.loop import Batch, Loss, LoopSettings, train


class DistillationError(UserError, ValueError):
    """A student cannot be built or trained as asked."""


# --------------------------------------------------------------------------- the student
def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of an encoder classifier (BERT, RoBERTa, MPNet, ... naming)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise DistillationError(
            f"{type(model).__name__}: no `base_model.encoder.layer` module list; layer selection supports "
            "BERT-like encoders (BERT, RoBERTa, MiniLM, MPNet, ...). Use a student model source instead.")
    return layers


def every_other_layer(num_layers: int) -> list[int]:
    """DistilBERT's choice: layers 0, 2, 4, ... of the teacher."""
    return list(range(0, num_layers, 2))


def make_student(teacher: nn.Module, layers: Sequence[int] | None = None) -> nn.Module:
    """A copy of `teacher` that keeps only the given encoder layers (teacher indices, in order).

    Everything else (embeddings, pooler, classifier) is copied as is. The teacher is untouched.
    """
    n = len(encoder_layers(teacher))
    layers = every_other_layer(n) if layers is None else list(layers)
    if not layers:
        raise DistillationError("student layers: need at least one layer")
    if sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= n:
        raise DistillationError(f"student layers {layers}: must be increasing, unique teacher indices in 0..{n - 1}")
    student = copy.deepcopy(teacher)
    kept = nn.ModuleList([encoder_layers(student)[i] for i in layers])
    for new_idx, layer in enumerate(kept):
        for m in layer.modules():  # cache bookkeeping in decoder-capable attention classes
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_idx
    getattr(student, "base_model", student).encoder.layer = kept
    student.config.num_hidden_layers = len(layers)
    return student


# --------------------------------------------------------------------------- the loss
def hidden_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher hidden-state index (0 = embeddings) for each student layer output 1..L_s."""
    return [round((j + 1) * teacher_layers / student_layers) for j in range(student_layers)]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    temperature: float = 2.0,
    kd_weight: float = 0.5,
    student_hidden: Sequence[torch.Tensor] | None = None,
    teacher_hidden: Sequence[torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    hidden_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted distillation loss and its parts (floats, for logging)."""
    ce = F.cross_entropy(student_logits, labels)
    parts = {"ce": float(ce.detach())}
    loss = ce
    if kd_weight > 0:
        if teacher_logits is None:
            raise DistillationError("kd_weight > 0 needs teacher logits")
        t = temperature
        kd = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                      log_target=True, reduction="batchmean") * (t * t)
        loss = kd_weight * kd + (1.0 - kd_weight) * ce
        parts["kd"] = float(kd.detach())
    if hidden_weight > 0:
        if student_hidden is None or teacher_hidden is None:
            raise DistillationError("hidden_weight > 0 needs student and teacher hidden states")
        idx = hidden_layer_map(len(student_hidden) - 1, len(teacher_hidden) - 1)
        mask = attention_mask.unsqueeze(-1).to(student_logits.dtype) if attention_mask is not None else None
        hs = []
        for j, ti in enumerate(idx):
            s, th = student_hidden[j + 1], teacher_hidden[ti]
            if s.shape[-1] != th.shape[-1]:
                raise DistillationError(f"hidden-state matching needs equal hidden sizes (student {s.shape[-1]}, "
                                        f"teacher {th.shape[-1]}); set hidden_weight: 0")
            sq = (s - th) ** 2
            hs.append((sq * mask).sum() / (mask.sum() * s.shape[-1]) if mask is not None else sq.mean())
        hidden = torch.stack(hs).mean()
        loss = loss + hidden_weight * hidden
        parts["hidden"] = float(hidden.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


# --------------------------------------------------------------------------- training
def kd_loss(y: Sequence[int], *, teacher_logits: np.ndarray | None = None, teacher: nn.Module | None = None,
            temperature: float = 2.0, kd_weight: float = 0.5, hidden_weight: float = 0.0) -> Loss:
    """`distillation_loss` as a loss for tuneline.train.loop: (loss, parts) of the student on a batch.

    With hidden_weight > 0 the `teacher` module runs alongside (its hidden states cannot be cached
    cheaply); otherwise only the precomputed `teacher_logits` (rows aligned with the data) are used.
    """
    if hidden_weight > 0 and teacher is None:
        raise DistillationError("hidden_weight > 0 needs the teacher module")
    if kd_weight > 0 and teacher_logits is None and teacher is None:
        raise DistillationError("kd_weight > 0 needs teacher logits (or the teacher)")
    y_all = torch.tensor(np.array(y), dtype=torch.long)
    t_all = torch.as_tensor(teacher_logits, dtype=torch.float32) if teacher_logits is not None else None
    want_hidden = hidden_weight > 0
    if teacher is not None:
        teacher.eval()

    def loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        rows = torch.as_tensor(batch.rows)
        out = model(**batch.inputs, output_hidden_states=want_hidden)
        t_logits, t_hidden = (t_all[rows].to(batch.device) if t_all is not None else None), None
        if teacher is not None and (want_hidden or t_logits is None):
            with torch.no_grad():
                t_out = teacher.to(batch.device)(**batch.inputs, output_hidden_states=want_hidden)
            t_hidden = t_out.hidden_states if want_hidden else None
            t_logits = t_out.logits.float() if t_logits is None else t_logits
        return distillation_loss(
            out.logits.float(), t_logits, y_all[rows].to(batch.device), temperature=temperature, kd_weight=kd_weight,
            student_hidden=out.hidden_states if want_hidden else None, teacher_hidden=t_hidden,
            attention_mask=batch.inputs["attention_mask"], hidden_weight=hidden_weight)

    return loss


def train_with_kd(
    model: nn.Module,
    data: Tokenized,
    y: Sequence[int],
    *,
    teacher_logits: np.ndarray | None = None,
    teacher: nn.Module | None = None,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    temperature: float = 2.0,
    kd_weight: float = 0.5,
    hidden_weight: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    desc: str = "fine-tune",
) -> dict[str, float]:
    """Train `model` in place with the distillation loss on tuneline.train.loop (linear warmup and
    decay, gradients clipped to norm 1); returns the mean loss parts of the last 50 steps and the
    step count. `epochs` may be fractional (a short recovery fine-tune). The compress stage builds
    CPU deployment variants, hence device cpu by default; the model is left on `device`."""
    loss = kd_loss(y, teacher_logits=teacher_logits, teacher=teacher, temperature=temperature, kd_weight=kd_weight,
                   hidden_weight=hidden_weight)
    settings = LoopSettings(epochs=epochs, batch_size=batch_size, lr=learning_rate, weight_decay=weight_decay,
                            warmup_ratio=warmup_ratio, schedule="linear", max_grad_norm=1.0, device=device,
                            precision="fp32" if device == "cpu" else "auto", desc=desc)
    torch.manual_seed(seed)
    result = train(model, data, loss, settings, seed=seed)
    recent = result.curve[-50:]
    keys = [k for k in ("ce", "kd", "hidden") if recent and k in recent[0]]
    summary = {k: float(np.mean([r[k] for r in recent])) for k in keys}
    if recent:
        summary["loss"] = float(np.mean([r["loss"] for r in recent]))
    summary["steps"] = float(result.steps)
    return summary
