"""The calibrate stage on a tiny fine-tuned BERT and small splits written here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tiny_pipeline import task_params, build_pipeline, calibrated_probs, single_thread

from stages.calibrate import run
from tuneline.evaluate.calibration import load_calibrated
from tuneline.params import CalibrateParams, ClassificationParams
from tuneline.tasks.labels import LabelError


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("calibrate")
    paths = build_pipeline(root, tiny_model_dir)
    with single_thread():
        out = run(CalibrateParams(), task_params(), paths)
    return root, paths, out


def test_writes_the_calibrator_metrics_and_plots(calibrated):
    root, _, out = calibrated
    saved = json.loads((root / "reports/metrics/calibrate.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert saved["method"] == "temperature" and saved["split"] == "val" and saved["rows"] == 120
    assert saved["n_bins"] == 15 and saved["temperature"] > 0
    for when in ("before", "after"):
        assert set(saved[when]) >= {"ece", "ece_adaptive", "mce", "brier", "nll", "accuracy"}
    # the temperature minimizes val NLL (T = 1 is a candidate) and never moves the argmax
    assert saved["after"]["nll"] <= saved["before"]["nll"] + 1e-12
    assert saved["after"]["accuracy"] == saved["before"]["accuracy"]

    finetuned, cal, pointer = load_calibrated(root / "models/calibrated")
    assert finetuned == (root / "models/finetuned").resolve()
    assert cal.temperature == pytest.approx(saved["temperature"])
    assert pointer["labels"] == ["ham", "spam"]
    assert sorted(p.name for p in (root / "models/calibrated").iterdir()) == ["calibrator.json", "model.json"]

    plots = root / "reports/plots/calibrate"
    for name in ("before", "after"):
        df = pd.read_csv(plots / f"reliability_{name}.csv")
        assert list(df.columns) == ["lower", "upper", "count", "confidence", "accuracy", "gap"]
        assert df["count"].sum() == 120
        assert ((df["confidence"] > df["lower"] - 1e-9) & (df["confidence"] <= df["upper"] + 1e-9)).all()
    assert (plots / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_other_methods(tmp_path, tiny_model_dir):
    paths = build_pipeline(tmp_path, tiny_model_dir)
    for method in ("vector", "isotonic"):
        with single_thread():
            out = run(CalibrateParams(method=method), task_params(), paths)
        assert out["method"] == method
        assert (out["temperature"] is None) == (method == "isotonic")
        assert out["after"]["nll"] <= out["before"]["nll"] + 1e-6  # fitted and scored on val: never worse there
        assert load_calibrated(tmp_path / "models/calibrated")[1].method == method


def test_refuses_a_model_trained_for_other_labels(calibrated):
    _, paths, _ = calibrated
    with pytest.raises(LabelError, match=r"made for labels \['ham', 'spam'\] but classification.labels is \['spam', 'ham'\]; retrain"):
        run(CalibrateParams(), ClassificationParams(labels=["spam", "ham"]), paths)


def test_probabilities_match_a_direct_computation(calibrated):
    """The calibrator applied to the model's own logits gives what the stage measured."""
    root, _, out = calibrated
    _, y, p = calibrated_probs(root, "val")
    nll = -np.log(p[np.arange(len(y)), y]).mean()
    assert nll == pytest.approx(out["after"]["nll"], rel=1e-5)
