"""Dynamic int8 on a tiny BERT: agrees with its fp32 source, smaller on disk, loads back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import make_texts
from tests.tuneline.conftest import LABELS, tiny_teacher
from tuneline.compress.storage import load_variant, save_variant, weights_bytes
from tuneline.evaluate.inference import logits as logits_of
from tuneline.evaluate.inference import tokenize
from tuneline.compress.pruning import remove_heads
from tuneline.compress.quantization import is_quantized, quantize_int8

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_int8_agrees_with_fp32_on_most_inputs_and_is_smaller_on_disk(tiny_model_dir, tmp_path):
    # hidden 128: with hidden 32 the per-tensor bookkeeping of the saved file outweighs the int8 savings
    model, tok, _, _ = tiny_teacher(tiny_model_dir, layers=2, hidden=128)
    held_out = tokenize(tok, make_texts(200, seed=7)["text"].tolist(), 32)
    q = quantize_int8(model)
    assert is_quantized(q) and not is_quantized(model)
    assert not any(isinstance(m, nn.Linear) and type(m) is nn.Linear for m in q.modules())
    fp32, int8 = logits_of(model, held_out), logits_of(q, held_out)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.95
    diff = np.abs(fp32 - int8).max(1)
    assert np.quantile(diff, 0.99) < 0.05 and diff.max() < 0.5 * np.abs(fp32).max()  # int8 noise, no outlier rows
    save_variant(model, tok, tmp_path / "fp32", {"name": "fp32", "format": "hf", "labels": LABELS})
    save_variant(q, tok, tmp_path / "int8", {"name": "int8", "format": "int8", "labels": LABELS,
                                            "quantization": {"per_channel": True, "embeddings": True}})
    assert weights_bytes(tmp_path / "int8") < 0.5 * weights_bytes(tmp_path / "fp32")
    # the file holds only tensors and plain containers: torch's safe loader accepts it
    state = torch.load(tmp_path / "int8" / "model.int8.pt", weights_only=True)
    packed = [x for v in state.values() if isinstance(v, tuple) for x in v]
    assert any(isinstance(x, torch.Tensor) and x.is_quantized and x.dtype == torch.qint8 for x in packed)
    loaded = load_variant(tmp_path / "int8")
    assert is_quantized(loaded.model)
    np.testing.assert_array_equal(logits_of(loaded.model, held_out), int8)  # bit-identical round trip


def test_vocabulary_embeddings_are_quantized_when_large(teacher):
    from transformers import BertConfig, BertForSequenceClassification

    big = BertForSequenceClassification(BertConfig(vocab_size=2000, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=37)).eval()
    q = quantize_int8(big)
    assert type(q.bert.embeddings.word_embeddings).__name__ == "Embedding" and \
        type(q.bert.embeddings.word_embeddings).__module__.startswith("torch.ao.nn.quantized")
    assert type(q.bert.embeddings.token_type_embeddings) is nn.Embedding  # tiny table, expanded ids: stays fp32
    ids = torch.randint(0, 2000, (3, 9))
    with torch.no_grad():
        diff = (q(input_ids=ids).logits - big(input_ids=ids).logits).abs().max()
    assert diff < 0.1
    assert type(quantize_int8(big, embeddings=False).bert.embeddings.word_embeddings) is nn.Embedding


def test_int8_of_a_head_pruned_model_loads_back(teacher, tmp_path):
    import copy

    model, tok, enc, _ = teacher
    m = copy.deepcopy(model)
    kept = remove_heads(m, {1: [0, 2]})
    q = quantize_int8(m, per_channel=False)
    save_variant(q, tok, tmp_path / "hq", {"name": "hq", "format": "int8", "kept_heads": kept, "labels": LABELS,
                                          "quantization": {"per_channel": False, "embeddings": True}})
    loaded = load_variant(tmp_path / "hq")
    np.testing.assert_array_equal(logits_of(loaded.model, enc), logits_of(q, enc))
