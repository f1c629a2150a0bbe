"""Houlsby adapters on a tiny BERT: identity at insertion, the right places, the right sizes."""

from __future__ import annotations

import pytest
import torch

from tuneline.train.adapters import AdaptedLinear, add_adapters, adapter_parameter_names
from tuneline.train.models import build_classifier

TARGET = r".*\.layer\.\d+\.(attention\.output|output)\.dense"


def test_adapters_start_as_identity_and_sit_after_both_sublayers(tiny_model_dir):
    torch.manual_seed(0)
    model, tok = build_classifier(tiny_model_dir, ["ham", "spam"])
    model.eval()
    batch = tok(["free cash now", "see you at home later"], padding=True, return_tensors="pt")
    before = model(**batch).logits
    wrapped = add_adapters(model, bottleneck=4, target_modules=TARGET)
    sublayers = ("attention.output.dense", "output.dense")
    assert wrapped == [f"bert.encoder.layer.{i}.{s}" for i in range(2) for s in sublayers]
    assert all(isinstance(model.get_submodule(n), AdaptedLinear) for n in wrapped)
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=0)
    hidden = model.config.hidden_size
    n = sum(p.numel() for name, p in model.named_parameters() if name in set(adapter_parameter_names(model)))
    assert n == 4 * (2 * hidden * 4 + 4 + hidden)


def test_a_regex_that_matches_nothing_is_an_error(tiny_model_dir):
    model, _ = build_classifier(tiny_model_dir, ["ham", "spam"])
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        add_adapters(model, 4, r".*\.nonexistent")
