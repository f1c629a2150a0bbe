"""The one training loop with caller-supplied losses on tiny real models: determinism, frozen
weights, KD and causal-LM losses plugged in unchanged, fractional epochs, AdaLoRA's allocator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_texts
from tuneline.compress.distillation import kd_loss, make_student
from tuneline.evaluate.inference import logits, tokenize
from tuneline.train.models import build_classifier
from tuneline.train.loop import LoopSettings, epoch_batches, setup_schedule, train
from tuneline.tasks.classification import cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["ham", "spam"]
SETTINGS = LoopSettings(epochs=1, batch_size=8, lr=1e-2, device="cpu", desc="test")


@pytest.fixture
def data(tiny_model_dir):
    df = make_texts(40)
    y = (df["label"] == "spam").to_numpy().astype(np.int64)
    torch.manual_seed(0)
    model, tok = build_classifier(tiny_model_dir, LABELS)
    return model, tok, tokenize(tok, df["text"].tolist(), 32), y


def _run(tiny_model_dir, data_, seed: int, **kw):
    _, tok, enc, y = data_
    torch.manual_seed(0)
    model, _ = build_classifier(tiny_model_dir, LABELS, dropout=0.1)
    torch.manual_seed(seed)
    res = train(model, enc, cross_entropy(y), LoopSettings(**{**SETTINGS.__dict__, **kw}), seed=seed)
    return model, res


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_model_dir, data):
    a, ra = _run(tiny_model_dir, data, seed=3)
    b, rb = _run(tiny_model_dir, data, seed=3)
    c, _ = _run(tiny_model_dir, data, seed=4)
    assert ra.curve == rb.curve
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_weights_the_caller_froze_stay_bit_identical(data):
    model, _, enc, y = data
    model.bert.embeddings.requires_grad_(False)
    model.bert.encoder.layer[0].requires_grad_(False)
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    train(model, enc, cross_entropy(y), SETTINGS, seed=0)
    for n, q in model.named_parameters():
        frozen = n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert torch.equal(q, before[n]) == frozen, n
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad  # flags left as the caller set them


def test_kd_loss_plugs_in_and_moves_the_student_towards_the_teacher(teacher):
    t_model, _, enc, y = teacher
    t_logits = logits(t_model, enc)
    student = make_student(t_model, [0])
    with torch.no_grad():
        for q in student.bert.encoder.layer.parameters():
            q.add_(0.05 * torch.randn_like(q))

    def distance(m):
        return float(np.abs(logits(m, enc) - t_logits).mean())

    before = distance(student)
    res = train(student, enc, kd_loss(y, teacher_logits=t_logits, kd_weight=1.0),
                LoopSettings(epochs=4, batch_size=16, lr=3e-3, device="cpu"), seed=0)
    assert distance(student) < before / 2
    assert {"step", "epoch", "loss", "lr", "ce", "kd"} <= set(res.curve[-1])  # the loss's parts are logged
    assert res.best == {} and res.evals == []  # no evaluate: no evaluations, the final weights are kept


def test_fractional_epochs_and_the_schedule_come_from_transformers(data):
    model, _, enc, y = data
    res = train(model, enc, cross_entropy(y), LoopSettings(**{**SETTINGS.__dict__, "epochs": 0.5,
                                                               "warmup_ratio": 0.5}), seed=0)
    assert res.steps == 3 and res.epochs_run == 1  # ceil(0.5 * 5 batches)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, total = setup_schedule(opt, LoopSettings(epochs=2, batch_size=8, warmup_ratio=0.3), 40)
    assert total == 10 and type(sched).__name__ == "LambdaLR"  # get_scheduler("linear"), warmup 3 steps
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] < lrs[2] < lrs[3] == 1.0 > lrs[4] > lrs[-1] > 0


def test_a_causal_lm_loss_plugs_in_without_changing_the_loop():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    rng = np.random.default_rng(0)
    seqs = [[1] + [int(t) for t in rng.integers(3, 10, size=rng.integers(4, 12))] for _ in range(32)]
    from tuneline.evaluate.inference import Tokenized

    data = Tokenized(seqs, pad_id=0)

    def next_token_loss(model, batch):
        labels = batch.inputs["input_ids"].masked_fill(batch.inputs["attention_mask"] == 0, -100)
        return model(**batch.inputs, labels=labels).loss

    res = train(lm, data, next_token_loss, LoopSettings(epochs=3, batch_size=8, lr=1e-2, device="cpu"), seed=0)
    assert res.steps == 12 and res.curve[-1]["loss"] < res.curve[0]["loss"]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_adalora_reallocates_its_rank_budget_through_the_loop(data):
    import peft

    model, _, enc, y = data
    total = 10
    config = peft.AdaLoraConfig(task_type="SEQ_CLS", init_r=4, target_r=2, tinit=1, tfinal=2, deltaT=1,
                                total_step=total, target_modules=["query", "value"])
    model = peft.get_peft_model(model, config)
    train(model, enc, cross_entropy(y), LoopSettings(epochs=2, batch_size=4, lr=1e-2, device="cpu"), seed=0)
    assert model.peft_config["default"].rank_pattern  # set by update_and_allocate at the end of the budget


def test_resampling_needs_labels():
    with pytest.raises(ValueError, match="needs the labels"):
        epoch_batches(np.array([3, 4]), None, 2, 0, 0, resample=True)
