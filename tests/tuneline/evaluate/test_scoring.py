"""One way to score a model on a split: the evaluate stage, compress and the gate get the same numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stages.gate import score as gate_score
from tests.conftest import make_texts
from tuneline.evaluate.calibration import fit_calibrator, softmax
from tuneline.compress.variants import score as compress_score
from tuneline.evaluate.scoring import HEADLINE, score_logits, score_split, score_texts
from tuneline.evaluate.inference import logits, tokenize
from tuneline.evaluate.metrics import classification_metrics
from tuneline.train.models import build_classifier
from tuneline.params import CalibrateParams, CompressParams
from tuneline.deploy.predictor import Predictor
from tuneline.tasks.labels import LabelSet

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["ham", "spam"]


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    torch.manual_seed(0)
    model, tok = build_classifier(tiny_model_dir, LABELS)
    model.eval()
    df = make_texts(60, seed=2)
    val, test = df[:30].reset_index(drop=True), df[30:].reset_index(drop=True)
    cal = fit_calibrator("temperature", logits(model, tokenize(tok, val["text"].tolist(), 32)),
                         (val["label"] == "spam").to_numpy().astype(np.int64))
    return model, tok, val, test, cal


def test_scores_are_the_calibrated_probabilities_through_the_metrics(setup):
    model, tok, _, test, cal = setup
    s = score_texts(model, tok, test["text"].tolist(), test["label"].tolist(), LABELS, cal, max_length=32)
    z = logits(model, tokenize(tok, test["text"].tolist(), 32))
    np.testing.assert_array_equal(s.logits, z)
    np.testing.assert_array_equal(s.probs, cal.transform(z))
    assert s.metrics == classification_metrics(test["label"].tolist(), cal.transform(z), LABELS, n_bootstrap=0)
    assert set(s.headline()) == set(HEADLINE) and s.headline()["accuracy"] == s.metrics["accuracy"]
    raw = score_logits(z, test["label"].tolist(), LABELS)  # no calibrator: the softmax
    np.testing.assert_array_equal(raw.probs, softmax(z))


def test_evaluate_compress_and_gate_agree_on_the_same_model_and_rows(setup):
    model, tok, val, test, cal = setup
    y_test = (test["label"] == "spam").to_numpy().astype(np.int64)
    enc_test = tokenize(tok, test["text"].tolist(), 32)
    evaluate = score_split(model, enc_test, y_test, LABELS, cal, n_bootstrap=0).metrics
    compress = compress_score(model, tokenize(tok, val["text"].tolist(), 32), enc_test, None, y_test,
                              CalibrateParams(), LABELS, CompressParams(n_bootstrap=0), seed=0, calibrator=cal)
    gate = gate_score(Predictor(version="v", labels=LABELS, max_length=32, model=model, tokenizer=tok,
                                calibrator=cal), pd.DataFrame(test), LabelSet(tuple(LABELS)), batch_size=64)
    for k in ("accuracy", "macro_f1", "ece", "nll"):
        assert evaluate[k] == compress[k] == gate[k], k
    assert gate["n"] == len(test)
