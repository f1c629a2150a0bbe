"""predict_logits: batched, length-sorted, and still in input order with the same numbers."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import make_texts
from tuneline.evaluate.inference import pad_batch, predict_logits
from tuneline.train.models import build_classifier


def test_logits_match_one_at_a_time_in_input_order(tiny_model_dir):
    torch.manual_seed(0)
    model, tok = build_classifier(tiny_model_dir, ["ham", "spam", "other"])
    model.train()
    texts = make_texts(11, seed=3).text.tolist()
    texts[4] = " ".join(["free cash"] * 30)  # longer than max_length: truncated
    got = predict_logits(model, tok, texts, max_length=24, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (11, 3)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        one = [model(**tok(t, truncation=True, max_length=24, return_tensors="pt")).logits[0].numpy() for t in texts]
    np.testing.assert_allclose(got, np.stack(one), atol=1e-5)
    assert predict_logits(model, tok, [], 24).shape == (0, 3)


def test_pad_batch_rounds_up_to_a_multiple():
    b = pad_batch([[5, 6, 7], [8]], pad_id=0, multiple_of=8)
    assert b["input_ids"].shape == (2, 8)
    assert b["input_ids"][1].tolist() == [8] + [0] * 7
    assert b["attention_mask"].sum(1).tolist() == [3, 1]
