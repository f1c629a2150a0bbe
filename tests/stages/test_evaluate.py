"""The evaluate stage on a tiny fine-tuned, calibrated BERT; numbers checked against scikit-learn."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from tiny_pipeline import base_params, task_params, build_pipeline, calibrated_probs, single_thread

from stages import calibrate
from stages.evaluate import length_bucket_names, run
from tuneline.params import CalibrateParams, EvaluateParams

PARAMS = EvaluateParams(n_bootstrap=200, n_mistakes=5)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("evaluate")
    paths = build_pipeline(root, tiny_model_dir)
    with single_thread():
        calibrate.run(CalibrateParams(), task_params(), paths)
        out = run(PARAMS, CalibrateParams(), base_params(), task_params(), paths)
    return root, paths, out


@pytest.fixture(scope="module")
def reference(evaluated):
    """Calibrated test probabilities computed directly from the model files."""
    return calibrated_probs(evaluated[0], "test")


def test_headline_and_intervals(evaluated, reference):
    root, _, out = evaluated
    saved = json.loads((root / "reports/metrics/evaluate.json").read_text())
    assert saved == json.loads(json.dumps(out))
    test, y, probs = reference
    pred = probs.argmax(1)
    h = saved["headline"]
    assert set(h) >= {"accuracy", "macro_f1", "ece", "nll", "brier", "roc_auc", "pr_auc"}
    assert h["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert h["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert h["nll"] == pytest.approx(skm.log_loss(y, probs), rel=1e-5)
    assert h["brier"] == pytest.approx(skm.brier_score_loss(y, probs[:, 1]), rel=1e-5)
    assert h["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), rel=1e-6)
    assert h["pr_auc"] == pytest.approx(skm.average_precision_score(y, probs[:, 1]), rel=1e-6)
    for key in ("accuracy", "macro_f1", "ece", "nll", "brier"):
        assert saved["ci"][key]["low"] <= h[key] <= saved["ci"][key]["high"], key
    assert saved["ci_level"] == 0.95 and saved["n_bootstrap"] == 200
    assert saved["rows"] == len(test) == 160
    pc = saved["per_class"]
    assert [pc[lab]["support"] for lab in ("ham", "spam")] == np.bincount(y, minlength=2).tolist()
    cal = saved["calibration"]
    assert cal["calibrated"]["ece"] == pytest.approx(h["ece"])
    assert cal["uncalibrated"]["accuracy"] == cal["calibrated"]["accuracy"]  # temperature keeps the argmax


def test_slices_partition_the_test_rows(evaluated, reference):
    _, _, out = evaluated
    test, y, probs = reference
    slices = out["slices"]
    assert set(slices) == {"length", "source", "pii_replaced"}
    for group, values in slices.items():
        assert sum(v["rows"] for v in values.values()) == len(test), group
    assert list(slices["length"]) == [b for b in length_bucket_names(PARAMS.length_buckets) if b in slices["length"]]
    assert set(slices["source"]) == set(test["source"])
    assert set(slices["pii_replaced"]) == {"yes", "no"}
    yes = test["pii_replaced"].to_numpy()
    assert slices["pii_replaced"]["yes"]["accuracy"] == pytest.approx((probs[yes].argmax(1) == y[yes]).mean())
    for values in slices.values():
        for v in values.values():
            assert v["small"] == (v["rows"] < PARAMS.min_slice_rows)


def test_confident_mistakes_are_wrong_sorted_and_anonymized(evaluated, reference):
    root, _, _ = evaluated
    test, y, probs = reference
    mistakes = json.loads((root / "reports/mistakes.json").read_text())
    assert 0 < len(mistakes) <= PARAMS.n_mistakes
    conf = [m["confidence"] for m in mistakes]
    assert conf == sorted(conf, reverse=True)
    by_id = test.set_index("id")
    wrong = probs.argmax(1) != y
    assert len(mistakes) == min(PARAMS.n_mistakes, int(wrong.sum()))
    assert conf[0] == pytest.approx(probs.max(1)[wrong].max())
    for m in mistakes:
        assert m["label"] != m["predicted"]
        assert m["text"] == by_id.loc[m["id"], "text"][: PARAMS.max_text_chars]  # the split's anonymized text


def test_plot_data_for_dvc(evaluated, reference):
    root, _, _ = evaluated
    test, y, probs = reference
    plots = root / "reports/plots/evaluate"
    cm = pd.read_csv(plots / "confusion.csv")
    assert list(cm.columns) == ["actual", "predicted"] and len(cm) == len(test)
    assert (cm["actual"] == test["label"]).all()
    roc = pd.read_csv(plots / "roc.csv")
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), abs=1e-5)
    pr = pd.read_csv(plots / "pr.csv")
    assert pr["recall"].is_monotonic_increasing
    for name in ("uncalibrated", "calibrated"):
        assert pd.read_csv(plots / f"reliability_{name}.csv")["count"].sum() == len(test)
    for name in ("confusion", "curves", "reliability"):
        assert (plots / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_text_that_never_went_through_clean_is_withheld(evaluated, tmp_path, tiny_model_dir):
    root, _, _ = evaluated
    paths = build_pipeline(tmp_path, tiny_model_dir)
    shutil.copytree(root / "models/calibrated", tmp_path / "models/calibrated")
    test = pd.read_parquet(tmp_path / "data/splits/test.parquet").drop(columns=["pii_replaced"])
    test.to_parquet(tmp_path / "data/splits/test.parquet", index=False)
    with single_thread():
        out = run(EvaluateParams(n_bootstrap=0, n_mistakes=3), CalibrateParams(), base_params(), task_params(), paths)
    mistakes = json.loads((tmp_path / "reports/mistakes.json").read_text())
    assert mistakes and all(m["text"] is None for m in mistakes)
    assert "pii_replaced" not in out["slices"] and out["ci"] == {}


def test_refuses_a_calibrator_fitted_on_another_model(evaluated, tmp_path, tiny_model_dir):
    root, _, _ = evaluated
    paths = build_pipeline(tmp_path, tiny_model_dir)
    shutil.copytree(root / "models/calibrated", tmp_path / "models/calibrated")
    cfg = tmp_path / "models/finetuned/tuneline.json"
    meta = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**meta, "max_length": 32}))  # any change to the fine-tuned folder
    with pytest.raises(ValueError, match="rerun calibrate"):
        run(PARAMS, CalibrateParams(), base_params(), task_params(), paths)
