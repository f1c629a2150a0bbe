"""Calibrators on synthetic logits with a known miscalibration: a calibrated model's logits
multiplied by a known factor (overconfident) or divided by one (underconfident)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneline.evaluate.calibration import Calibrator, fit_calibrator, load_calibrated, load_calibrator, save_calibrated, softmax


def _metric():
    from tuneline.evaluate.metrics import load_metric

    return load_metric("calibration_error").scores


def synthetic(n: int, k: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits z*T where y ~ softmax(z): softmax(z*T / T) is perfectly calibrated, so T is the truth."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k)) + 2.0 * np.eye(k)[rng.integers(0, k, n)]
    p = softmax(z)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return z * temperature, y


@pytest.mark.parametrize("k,true_t", [(2, 3.0), (5, 2.5), (27, 4.0), (4, 0.5)])
def test_temperature_is_recovered_and_ece_drops(k, true_t):
    z, y = synthetic(6000, k, true_t, seed=k)
    zt, yt = synthetic(6000, k, true_t, seed=100 + k)
    cal = fit_calibrator("temperature", z, y)
    assert cal.temperature == pytest.approx(true_t, rel=0.06)
    before, after = _metric()(yt, softmax(zt)), _metric()(yt, cal.transform(zt))
    assert after["ece"] < 0.5 * before["ece"]  # held-out data
    assert after["nll"] < before["nll"]
    assert after["accuracy"] == before["accuracy"]  # a temperature never moves the argmax
    assert np.array_equal(cal.transform(zt).argmax(1), zt.argmax(1))


@pytest.mark.parametrize("method", ["vector", "isotonic"])
@pytest.mark.parametrize("k", [2, 6])
def test_other_methods_cut_ece_on_held_out_data(method, k):
    z, y = synthetic(5000, k, 3.0, seed=1)
    zt, yt = synthetic(5000, k, 3.0, seed=2)
    cal = fit_calibrator(method, z, y)
    probs = cal.transform(zt)
    assert probs.shape == zt.shape
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs >= 0).all()
    before, after = _metric()(yt, softmax(zt)), _metric()(yt, probs)
    assert after["ece"] < 0.5 * before["ece"]
    assert after["nll"] < before["nll"]
    assert after["accuracy"] > before["accuracy"] - 0.02


def test_vector_scaling_learns_a_class_bias():
    # class 0 logits are shifted up by 1.5 on top of overconfidence: vector scaling removes the shift
    z, y = synthetic(8000, 3, 2.0, seed=3)
    z = z + np.array([1.5, 0.0, 0.0])
    cal = fit_calibrator("vector", z, y, vector_l2=0.0)
    b = np.asarray(cal.bias)
    w = np.asarray(cal.weights)
    assert (b[0] - b[1:].mean()) == pytest.approx(-1.5 * w[0], abs=0.2)
    assert w == pytest.approx([0.5, 0.5, 0.5], abs=0.06)


def test_a_perfectly_separated_fit_says_so():
    z = np.array([[4.0, -4.0], [-3.0, 3.0]] * 20)
    y = np.array([0, 1] * 20)
    assert fit_calibrator("temperature", z, y).fit["temperature_at_bound"]
    z2, y2 = synthetic(2000, 2, 2.0, seed=4)
    assert not fit_calibrator("temperature", z2, y2).fit["temperature_at_bound"]


def test_isotonic_floor_keeps_nll_finite():
    z, y = synthetic(3000, 3, 3.0, seed=5)
    cal = fit_calibrator("isotonic", z, y, isotonic_floor=1e-3)
    assert cal.transform(z).min() >= 1e-3 / 3  # floor, then rows renormalized (sum <= 3)


@pytest.mark.parametrize("method", ["temperature", "vector", "isotonic", "none"])
def test_save_and_load_round_trip_as_plain_json(tmp_path, method):
    z, y = synthetic(800, 4, 2.0, seed=6)
    cal = fit_calibrator(method, z, y)
    cal.save(tmp_path)
    raw = json.loads((tmp_path / "calibrator.json").read_text())  # plain JSON, no pickle
    assert raw["method"] == method and raw["format"] == "tuneline.calibrator/1"
    assert [p.name for p in tmp_path.iterdir()] == ["calibrator.json"]
    back = load_calibrator(tmp_path)
    np.testing.assert_array_equal(back.transform(z), cal.transform(z))


def test_calibrated_folder_points_at_its_model_and_notices_a_change(tmp_path):
    finetuned = tmp_path / "finetuned"
    finetuned.mkdir()
    (finetuned / "model.safetensors").write_bytes(b"weights v1")
    z, y = synthetic(500, 2, 2.0, seed=7)
    save_calibrated(tmp_path / "calibrated", fit_calibrator("temperature", z, y), finetuned, ["ham", "spam"])
    pointer = json.loads((tmp_path / "calibrated" / "model.json").read_text())
    assert pointer["finetuned"] == "../finetuned" and pointer["labels"] == ["ham", "spam"]
    path, cal, _ = load_calibrated(tmp_path / "calibrated")
    assert path == finetuned.resolve() and cal.method == "temperature"
    (finetuned / "model.safetensors").write_bytes(b"weights v2")
    with pytest.raises(ValueError, match="rerun calibrate"):
        load_calibrated(tmp_path / "calibrated")


def test_errors_name_the_problem(tmp_path):
    z, y = synthetic(100, 3, 1.0, seed=8)
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibrator("platt", z, y)
    with pytest.raises(ValueError, match="labels must lie"):
        fit_calibrator("temperature", z, y + 3)
    with pytest.raises(ValueError, match=r"logits must be \[n, 3\]"):
        fit_calibrator("temperature", z, y).transform(z[:, :2])
    with pytest.raises(FileNotFoundError, match="dvc repro calibrate"):
        load_calibrator(tmp_path)
    with pytest.raises(ValueError, match="format"):
        Calibrator.from_dict({"method": "temperature"})
