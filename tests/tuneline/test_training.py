"""Fine-tuning a classifier with the train params on a tiny BERT: layer-wise LR, freezing, gradual
unfreezing, early stopping with the best weights kept, batching, class balance, grad accumulation,
and the same weights as the training code before the loop was shared (recorded values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_texts, single_thread
from tuneline.train.methods import apply_method
from tuneline.train.models import build_classifier
from tuneline.params import TrainParams
from tuneline.train.freezing import apply_freezing, layer_index, param_groups, set_trainable, unfreeze_stage
from tuneline.train.loop import epoch_batches, pick_device, use_bf16
from tuneline.tasks.classification import class_weights, evaluate, fit

LABELS = ["ham", "spam"]


def params(tiny_model_dir, **kw) -> TrainParams:
    return TrainParams.model_validate({
        "base_model": {"kind": "local", "path": str(tiny_model_dir)}, "max_length": 32, "batch_size": 8,
        "epochs": 1, "lr": 1e-2, "warmup_ratio": 0.0, "checkpoint_every": 0, "early_stopping": {"patience": 0},
        **kw})


@pytest.fixture
def data():
    df = make_texts(48)
    y = (df["label"] == "spam").to_numpy().astype(np.int64)
    return df.text.tolist()[:32], y[:32], df.text.tolist()[32:], y[32:]


@pytest.fixture
def model(tiny_model_dir):
    torch.manual_seed(0)
    return build_classifier(tiny_model_dir, LABELS)


def layer_of(name: str) -> str:
    i = layer_index(name, 2)
    return {0: "embeddings", 1: "layer0", 2: "layer1", 3: "head"}[i]


def test_layers_are_numbered_from_the_embeddings_to_the_head():
    assert layer_index("bert.embeddings.word_embeddings.weight", 2) == 0
    assert layer_index("bert.encoder.layer.0.attention.self.query.weight", 2) == 1
    assert layer_index("base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default.weight", 2) == 2
    assert layer_index("bert.encoder.layer.1.output.dense.adapter.up.weight", 2) == 2
    assert layer_index("bert.pooler.dense.weight", 2) == 3
    assert layer_index("classifier.weight", 2) == 3
    assert layer_index("prompt_encoder.default.embedding.weight", 2) == 3


def test_layerwise_lr_decay_assigns_each_layer_its_rate(model):
    m, _ = model
    groups = param_groups(list(m.named_parameters()), lr=1.0, weight_decay=0.1, layer_decay=0.5, n_layers=2)
    rate = {"head": 1.0, "layer1": 0.5, "layer0": 0.25, "embeddings": 0.125}
    seen = set()
    for g in groups:
        for name in g["names"]:
            assert g["lr"] == rate[layer_of(name)], name
            seen.add(name)
        # biases and LayerNorm weights are not decayed; matrices are
        assert g["weight_decay"] == (0.1 if all(p.ndim >= 2 for p in g["params"]) else 0.0)
        assert len({p.ndim >= 2 for p in g["params"]}) == 1
    assert seen == {n for n, _ in m.named_parameters()}
    assert param_groups(list(m.named_parameters()), 1.0, 0.0, 1.0, 2)[0]["lr"] == 1.0


def test_gradual_unfreezing_goes_top_down(model, tiny_model_dir):
    m, _ = model
    p = params(tiny_model_dir, unfreeze_every=2, unfreeze_unit="steps")
    trainable = {n for n, _ in m.named_parameters()}
    order = []
    for step in range(0, 9, 2):
        set_trainable(m, trainable, unfreeze_stage(p.unfreeze_every, p.unfreeze_unit, step, 0), 2)
        order.append({layer_of(n) for n, q in m.named_parameters() if q.requires_grad})
    assert order == [{"head"}, {"head", "layer1"}, {"head", "layer1", "layer0"},
                     {"head", "layer1", "layer0", "embeddings"}] + [{"head", "layer1", "layer0", "embeddings"}]
    p1 = params(tiny_model_dir, unfreeze_every=1)
    assert unfreeze_stage(p1.unfreeze_every, p1.unfreeze_unit, step=50, epoch=2) == 2  # epochs by default
    assert unfreeze_stage(0, "epochs", 50, 2) is None


def test_gradual_unfreezing_in_a_real_run_trains_top_layers_first(model, data, tiny_model_dir):
    m, tok = model
    before = {n: q.detach().clone() for n, q in m.named_parameters()}
    # steps 1-2 train the head, step 3 also the top layer; the lower layer and embeddings never
    fit(m, tok, *data, LABELS, params(tiny_model_dir, unfreeze_every=2, unfreeze_unit="steps", max_steps=3),
        seed=0, progress=False)
    changed = {layer_of(n) for n, q in m.named_parameters() if not torch.equal(q, before[n])}
    assert changed == {"head", "layer1"}
    assert all(q.requires_grad for q in m.parameters())  # the returned model is not left half-frozen


def test_frozen_embeddings_and_lowest_layers_stay_bit_identical(model, data, tiny_model_dir):
    m, tok = model
    before = {n: q.detach().clone() for n, q in m.named_parameters()}
    p = params(tiny_model_dir, freeze_embeddings=True, freeze_layers=1, max_steps=3)
    fit(m, tok, *data, LABELS, p, seed=0, progress=False)
    for n, q in m.named_parameters():
        if layer_of(n) in ("embeddings", "layer0"):
            assert torch.equal(q, before[n]), n
        else:
            assert not torch.equal(q, before[n]), n
    with pytest.raises(ValueError, match="only 2 layers"):
        apply_freezing({"x"}, 2, False, 3)


def test_early_stopping_stops_and_keeps_the_best_weights(model, data, tiny_model_dir):
    m, tok = model
    # min_delta larger than any change: only the first evaluation counts as an improvement
    p = params(tiny_model_dir, epochs=5, eval_every=1,
               early_stopping={"metric": "loss", "patience": 2, "min_delta": 10.0})
    res = fit(m, tok, *data, LABELS, p, seed=0, progress=False)
    assert res.stopped_early and res.steps == 3 and res.best_step == 1 and len(res.evals) == 3
    assert res.epochs_run == 1
    assert res.evals[-1]["loss"] != res.best["loss"]
    again = evaluate(m, tok, data[2], data[3], LABELS, 32, 64)
    assert again["loss"] == pytest.approx(res.best["loss"], abs=1e-6)  # the model holds the step-1 weights


def test_epoch_batches_cover_every_row_once_grouped_by_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 100, size=1000)
    labels = (rng.random(1000) < 0.1).astype(np.int64)
    batches = epoch_batches(lengths, labels, 10, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    shuffled = epoch_batches(lengths, labels, 10, 1, 0, length_grouping=False)
    random_spread = np.mean([np.ptp(lengths[b]) for b in shuffled])
    assert spread < random_spread / 5
    again = epoch_batches(lengths, labels, 10, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))  # a pure function of (seed, epoch)
    other = epoch_batches(lengths, labels, 10, seed=1, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))
    balanced = np.concatenate(epoch_batches(lengths, labels, 10, 1, 0, resample=True))
    assert len(balanced) == 1000 and 0.4 < labels[balanced].mean() < 0.6


def test_class_weights_are_inverse_frequency():
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2), [4 / 6, 4 / 2])
    np.testing.assert_allclose(class_weights(np.array([0, 0]), 3), [2 / 6, 0, 0])


def test_grad_accumulation_counts_optimizer_steps_and_methods_compose(model, data, tiny_model_dir):
    m, tok = model
    p = params(tiny_model_dir, method="lora", epochs=2, grad_accum=2, class_balance="weights",
               label_smoothing=0.1, layer_lr_decay=0.8, schedule="cosine", warmup_ratio=0.2)
    m = apply_method(m, p, tiny_model_dir)
    res = fit(m, tok, *data, LABELS, p, seed=0, progress=False)
    assert res.steps == 4 and res.samples == 64 and len(res.curve) == 4 and len(res.evals) == 2
    assert res.curve[0]["lr"] > 0 and res.curve[-1]["lr"] < res.curve[1]["lr"]


def test_device_and_precision_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not use_bf16("auto", torch.device("cpu")) and not use_bf16("fp32", torch.device("cpu"))
    assert use_bf16("bf16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")


@pytest.mark.gpu
def test_cuda_path_uses_bf16_autocast_and_reports_gpu_memory(model, data, tiny_model_dir):
    assert torch.cuda.is_available(), "the gpu tier needs a CUDA device (run with -m gpu on one)"
    m, tok = model
    res = fit(m, tok, *data, LABELS, params(tiny_model_dir, max_steps=3), seed=0, progress=False)
    assert res.device.startswith("cuda") and next(m.parameters()).is_cuda
    assert res.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert 0 < res.peak_memory_mb < 1024


def test_same_numbers_as_before_the_shared_loop(tmp_path, tiny_model_dir):
    """Values recorded from the pre-loop `fit` (commit 015c4d6) on this exact setup: the train stage's
    numerics (batch order, seeding, optimizer, schedule, loss) did not move when the loop was shared."""
    df = make_texts(120, seed=3)
    y = (df["label"] == "spam").to_numpy().astype(np.int64)
    p = params(tiny_model_dir, epochs=2, lr=5e-3, grad_accum=2, class_balance="weights", label_smoothing=0.1,
               layer_lr_decay=0.8, schedule="cosine", warmup_ratio=0.2, max_grad_norm=1.0, dropout=0.1)
    with single_thread():
        torch.manual_seed(0)
        m, tok = build_classifier(tiny_model_dir, LABELS, p.dropout)
        torch.manual_seed(1)
        res = fit(m, tok, df.text.tolist()[:88], y[:88], df.text.tolist()[88:], y[88:], LABELS, p, seed=7,
                  progress=False)
    recorded = [0.725241, 0.730432, 0.717886, 0.720556, 0.723508, 0.70648, 0.714359, 0.729107, 0.705702, 0.705445,
                0.701744, 0.788759]
    assert [c["loss"] for c in res.curve] == pytest.approx(recorded, abs=2e-5)
    assert res.best_step == 6 and res.best["loss"] == pytest.approx(0.694486, abs=2e-5)
    assert float(m.classifier.weight.detach().double().sum()) == pytest.approx(0.1186223849945236, abs=1e-5)
