"""Fixtures of the library tests: a tiny trained BERT teacher for distillation, pruning and quantization."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_texts
from tuneline.compress.distillation import train_with_kd
from tuneline.evaluate.inference import tokenize

LABELS = ["ham", "spam"]


def tiny_teacher(tok_dir, layers: int = 4, hidden: int = 32, train: bool = True):
    """A 4-layer BERT classifier (hidden 32, 4 heads), briefly trained on synthetic ham/spam."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=hidden + 5, max_position_embeddings=128, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    model = BertForSequenceClassification(config).eval()
    df = make_texts(96)
    enc = tokenize(tok, df["text"].tolist(), 32)
    y = (df["label"] == "spam").astype(int).to_numpy()
    if train:  # dropout off and a large step: 24 steps separate the classes (accuracy 1.0)
        train_with_kd(model, enc, y, kd_weight=0.0, epochs=4, batch_size=16, learning_rate=1e-2, desc="teacher")
    return model, tok, enc, y


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, one_thread):
    return tiny_teacher(tiny_model_dir)

