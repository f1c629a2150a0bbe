"""gate: real tiny models judged on real splits; a trained model beats an untrained one."""

from pathlib import Path

import pytest

from stages import gate
from tiny_pipeline import LABELS, task_params, make_paths, train_tiny, write_splits
from tuneline.evaluate.calibration import Calibrator, save_calibrated
from tuneline.params import GateParams
from tuneline.data.records import read_json, write_json
from tuneline.deploy.registry import Registry


def _model(base_dir: Path, out: Path, train=None) -> Path:
    """A models/ folder: finetuned/ (trained on `train`, or 0 epochs) + calibrated/."""
    import pandas as pd

    rows = train if train is not None else pd.DataFrame({"text": ["x"], "label": ["ham"]})
    train_tiny(base_dir, rows, out / "finetuned", epochs=4 if train is not None else 0, max_length=32)
    save_calibrated(out / "calibrated", Calibrator("temperature", 2, temperature=1.0), out / "finetuned", LABELS)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("gate")
    paths = make_paths(root)
    splits = write_splits(paths)
    good = _model(tiny_model_dir, root / "good", splits["train"])
    bad = _model(tiny_model_dir, root / "bad")
    return paths, splits, good, bad


def _install(paths, candidate: Path, production: Path | None, splits) -> None:
    import shutil

    models = Path(paths.models)
    shutil.rmtree(models, ignore_errors=True)
    shutil.copytree(candidate, models)
    shutil.rmtree(paths.registry, ignore_errors=True)
    reg = Registry(paths.registry)
    if production is not None:
        from tuneline.data.assets import tree_sha256

        reg.promote(production, train_ids=set(), record={"finetuned_sha256": tree_sha256(production / "finetuned")},
                    test=splits["test"], regression_rows=60, seed=0)
    write_json(reg.pointer_snapshot(), models / "production.json")


P = GateParams(min_eval_rows=20, margin=0.01, max_regression=0.02)


def test_first_model_is_promoted(setup):
    paths, splits, good, _ = setup
    _install(paths, good, None, splits)
    out = gate.run(P, task_params(), paths)
    assert out["decision"]["promote"] and out["production"] is None
    assert out["candidate"]["test"]["n"] == len(splits["test"]) and out["candidate"]["calibrated"]
    assert read_json(Path(paths.metrics) / "gate.json") == out


def test_better_candidate_promoted_worse_rejected(setup):
    paths, splits, good, bad = setup
    _install(paths, good, bad, splits)
    better = gate.run(P, task_params(), paths)
    assert better["decision"]["promote"], better["decision"]
    assert better["candidate"]["test"]["macro_f1"] > better["production"]["test"]["macro_f1"] + P.margin
    assert better["candidate"]["regression"]["n"] > 0  # the frozen set was scored (old data)
    assert better["candidate"]["feedback"]["n"] > 0  # the test rows from feedback (new data)

    _install(paths, bad, good, splits)
    worse = gate.run(P, task_params(), paths)
    assert not worse["decision"]["promote"]
    assert any("test macro_f1" in r for r in worse["decision"]["reasons"])
    # the report shows the rejection and its reason (report stage reads gate.json)
    from tuneline.evaluate.document import render_markdown
    from tuneline.evaluate.report import gate_section

    md = render_markdown("report", [gate_section(worse)])
    assert "is rejected: production stays v0001" in md and "regression set (old data)" in md
    assert worse["decision"]["reasons"][0] in md

    _install(paths, good, good, splits)
    same = gate.run(P, task_params(), paths)
    assert not same["decision"]["promote"] and "production model itself" in same["decision"]["reasons"][0]
