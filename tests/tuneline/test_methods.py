"""Every method on a tiny BERT: the trainable count matches the method, a few real training
steps change exactly the trainable weights (the frozen ones stay bit-identical), and the saved
folder loads back to the same logits."""

from __future__ import annotations

from typing import get_args

import numpy as np
import peft
import pytest
import torch

from tests.conftest import make_texts
from tuneline.evaluate.inference import predict_logits
from tuneline.train.methods import METHODS, PEFT_TABLE, adapter_meta, apply_method, peft_config
from tuneline.train.models import build_classifier, count_parameters, load_finetuned, save_finetuned
from tuneline.params import LocalSource, Method, TrainParams
from tuneline.tasks.classification import fit

LABELS = ["ham", "spam"]
H, L, INTER, K = 32, 2, 37, 2  # the tiny_model_dir config
HEAD = H * K + K


def expected_trainable(method: str, total_base: int) -> int:
    return {
        "full": total_base,
        "lora": 2 * L * 4 * (H + H) + HEAD,                       # r=4 on query and value
        "ia3": L * (H + H + H + INTER) + HEAD,                    # key, value, attention out (in), ffn out (in)
        "prefix": 4 * L * 2 * H + HEAD,                           # 4 tokens, a key and a value per layer
        "prompt": 4 * H + HEAD,                                   # 4 soft tokens
        "p_tuning": 4 * H + (H * 8 + 8) + (8 * 8 + 8) + (8 * H + H) + HEAD,  # tokens + MLP encoder (hidden 8)
        "adapter": 2 * L * (2 * H * 4 + 4 + H) + HEAD,            # bottleneck 4 after both sublayers
    }[method]


def small_params(tiny_model_dir, method: str, **kw) -> TrainParams:
    return TrainParams.model_validate({
        "base_model": {"kind": "local", "path": str(tiny_model_dir)}, "method": method, "max_length": 32,
        "batch_size": 8, "epochs": 1, "lr": 1e-2, "warmup_ratio": 0.0, "checkpoint_every": 0,
        "early_stopping": {"patience": 0},
        "lora": {"r": 4, "lr": 1e-2}, "ia3": {"lr": 1e-2}, "prefix": {"num_virtual_tokens": 4},
        "prompt": {"num_virtual_tokens": 4}, "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 8},
        "adapter": {"bottleneck": 4, "lr": 1e-2}, **kw})


def test_the_table_covers_every_method_and_builds_peft_configs(tiny_model_dir):
    assert set(METHODS) == {"full", "adapter", *PEFT_TABLE} == set(get_args(Method)) and len(METHODS) == 7
    kinds = {"lora": peft.LoraConfig, "ia3": peft.IA3Config, "prefix": peft.PrefixTuningConfig,
             "prompt": peft.PromptTuningConfig, "p_tuning": peft.PromptEncoderConfig}
    for method in PEFT_TABLE:
        cfg = peft_config(small_params(tiny_model_dir, method), tiny_model_dir)
        assert isinstance(cfg, kinds[method]) and cfg.task_type == "SEQ_CLS"
    text_init = small_params(tiny_model_dir, "prompt", prompt={"num_virtual_tokens": 4, "init_text": "is it spam"})
    assert peft_config(text_init, tiny_model_dir).prompt_tuning_init == "TEXT"


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_exactly_its_weights_and_round_trips(method, tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    p = small_params(tiny_model_dir, method, max_steps=3)
    model, tok = build_classifier(tiny_model_dir, LABELS)
    total_base = sum(q.numel() for q in model.parameters())
    model = apply_method(model, p, tiny_model_dir)
    trainable, total = count_parameters(model)
    assert trainable == expected_trainable(method, total_base)
    assert total == total_base + (0 if method == "full" else trainable - HEAD)

    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    was_trainable = {n for n, q in model.named_parameters() if q.requires_grad}
    df = make_texts(48)
    y = (df["label"] == "spam").to_numpy().astype(np.int64)
    res = fit(model, tok, df.text.tolist()[:32], y[:32], df.text.tolist()[32:], y[32:], LABELS, p, seed=0,
              progress=False)
    assert res.steps == 3
    for n, q in model.named_parameters():
        if n in was_trainable:
            assert not torch.equal(q, before[n]), f"{method}: trainable {n} did not change"
        else:
            assert torch.equal(q, before[n]), f"{method}: frozen {n} changed"

    texts = make_texts(10, seed=1).text.tolist()
    expected = predict_logits(model, tok, texts, 32)
    meta = {"method": method, "labels": LABELS, "max_length": 32, "base": "test",
            "base_source": LocalSource(path=str(tiny_model_dir)).model_dump()}
    if method == "adapter":
        meta["adapter"] = adapter_meta(p)
    save_finetuned(model, tok, tmp_path / "ft", meta)
    ft = load_finetuned(tmp_path / "ft", cache_dir=tmp_path / "cache")
    assert ft.labels == LABELS and ft.meta["method"] == method and not ft.model.training
    assert ft.meta["merged"] == (method in ("full", "lora", "ia3"))
    np.testing.assert_allclose(predict_logits(ft.model, ft.tokenizer, texts, 32), expected, atol=1e-5)
    batch = ft.tokenizer(texts[:2], padding=True, return_tensors="pt")  # token_type_ids included
    assert ft.model(**batch).logits.shape == (2, K)
