"""Knowledge distillation: a shallower student initialised from the teacher, trained on its logits.

The default student is DistilBERT-style: a copy of the teacher that keeps a subset of its
transformer layers (every other one by default), so embeddings, the kept layers, the pooler and
the classifier start from the teacher's fine-tuned weights. The loss is

    kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - kd_weight) * CE(s, y)
    [+ hidden_weight * MSE(student hidden states, teacher hidden states)]

with the teacher's logits computed once (no dropout) before training. Hidden-state matching is
optional and only possible when both hidden sizes agree; student layer j is matched to the
teacher layer at the same relative depth (round((j+1) * L_teacher / L_student)).

`fine_tune` is the one training loop of the compress stage: distillation uses it, and so does
the recovery fine-tune after pruning (masks stay applied through torch.nn.utils.prune hooks).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from tuneline.errors import UserError


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


# --------------------------------------------------------------------------- batching
@dataclass
class Encoded:
    """Texts tokenized once, unpadded: one list of ids per text."""

    input_ids: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, idx: Sequence[int], multiple: int = 8) -> dict[str, torch.Tensor]:
        """Padded tensors for rows `idx` (right padding to a multiple of `multiple` tokens)."""
        rows = [self.input_ids[i] for i in idx]
        width = max(len(r) for r in rows)
        width = int(math.ceil(width / multiple) * multiple)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[k, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def encode(tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(input_ids=ids, pad_id=pad)


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar length: shuffle, sort within chunks of 50 batches, shuffle the batches.

    With rng=None the order is deterministic (sorted by length) for inference.
    """
    n = len(lengths)
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i: i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    chunk = batch_size * 50
    batches = []
    for s in range(0, n, chunk):
        part = order[s: s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i: i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.inference_mode()
def logits_of(model: nn.Module, enc: Encoded, batch_size: int = 64, desc: str | None = None) -> np.ndarray:
    """Logits for every encoded text, in input order (length-sorted batches, eval mode)."""
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    batches = length_batches([len(x) for x in enc.input_ids], batch_size, None)
    for idx in tqdm(batches, desc=desc, disable=desc is None, leave=False):
        logits = model(**enc.batch(idx)).logits.float().numpy()
        if out is None:
            out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


# --------------------------------------------------------------------------- training
def fine_tune(
    model: nn.Module,
    enc: Encoded,
    labels: Sequence[int],
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
    desc: str = "fine-tune",
) -> dict[str, float]:
    """Train `model` in place with the distillation loss; returns the mean loss parts of the last 50 steps.

    `epochs` may be fractional (a short recovery fine-tune). With hidden_weight > 0 the `teacher`
    module runs alongside (its hidden states cannot be cached cheaply); otherwise only the
    precomputed `teacher_logits` (rows aligned with `enc`) are used.
    """
    if hidden_weight > 0 and teacher is None:
        raise DistillationError("hidden_weight > 0 needs the teacher module")
    if kd_weight > 0 and teacher_logits is None and teacher is None:
        raise DistillationError("kd_weight > 0 needs teacher logits (or the teacher)")
    y_all = torch.tensor(np.array(labels), dtype=torch.long)
    t_all = torch.as_tensor(teacher_logits, dtype=torch.float32) if teacher_logits is not None else None
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    lengths = [len(x) for x in enc.input_ids]
    per_epoch = math.ceil(len(enc) / batch_size)
    total = max(1, math.ceil(epochs * per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate)
    warm = int(warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    model.train()
    if teacher is not None:
        teacher.eval()
    recent: list[dict[str, float]] = []
    step = 0
    bar = tqdm(total=total, desc=desc, leave=False)
    while step < total:
        for idx in length_batches(lengths, batch_size, rng):
            if step >= total:
                break
            batch = enc.batch(idx)
            want_hidden = hidden_weight > 0
            out = model(**batch, output_hidden_states=want_hidden)
            t_logits, t_hidden = (t_all[idx] if t_all is not None else None), None
            if teacher is not None and (want_hidden or t_logits is None):
                with torch.no_grad():
                    t_out = teacher(**batch, output_hidden_states=want_hidden)
                t_hidden = t_out.hidden_states if want_hidden else None
                t_logits = t_out.logits if t_logits is None else t_logits
            loss, parts = distillation_loss(
                out.logits, t_logits, y_all[idx], temperature=temperature, kd_weight=kd_weight,
                student_hidden=out.hidden_states if want_hidden else None, teacher_hidden=t_hidden,
                attention_mask=batch["attention_mask"], hidden_weight=hidden_weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            recent = (recent + [parts])[-50:]
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean([r['loss'] for r in recent]):.4f}")
    bar.close()
    model.eval()
    keys = recent[0].keys() if recent else []
    summary = {k: float(np.mean([r[k] for r in recent])) for k in keys}
    summary["steps"] = float(step)
    return summary
