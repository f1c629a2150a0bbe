import pandas as pd
import pytest

from tuneline.deploy.registry import Registry, RegistryError


def _candidate(root, weights: str):
    (root / "finetuned").mkdir(parents=True, exist_ok=True)
    (root / "finetuned" / "model.safetensors").write_text(weights)
    (root / "calibrated").mkdir(exist_ok=True)
    (root / "calibrated" / "calibrator.json").write_text("{}")
    return root


def _test_split(n=200):
    return pd.DataFrame({"id": [f"id{i:03d}" for i in range(n)], "text": [f"t{i}" for i in range(n)],
                         "label": ["spam" if i % 4 == 0 else "ham" for i in range(n)], "source": "sms"})


def test_promote_copies_points_and_freezes_regression_once(tmp_path):
    reg = Registry(tmp_path / "registry")
    assert reg.production() is None and reg.pointer_snapshot()["version"] is None
    models = _candidate(tmp_path / "models", "weights-1")
    rec = reg.promote(models, train_ids={"a", "b"}, record={"git_commit": "abc", "dvc_lock_sha256": "f00"},
                      test=_test_split(), regression_rows=40, seed=1, keep=2)
    assert rec["version"] == "v0001" and reg.production()["git_commit"] == "abc"
    assert (reg.version_dir("v0001") / "finetuned" / "model.safetensors").read_text() == "weights-1"
    assert reg.train_ids("v0001") == {"a", "b"}
    frozen = reg.regression_set()
    assert len(frozen) == 40 and (frozen["label"] == "spam").sum() == 10  # stratified: 1/4 spam kept

    # the candidate folder changes (the next training); v0001 must not
    _candidate(models, "weights-2")
    assert (reg.version_dir("v0001") / "finetuned" / "model.safetensors").read_text() == "weights-1"
    snap = reg.pointer_snapshot()
    assert snap == reg.pointer_snapshot() and snap["version"] == "v0001" and snap["regression_sha256"]

    rec2 = reg.promote(models, train_ids={"c"}, record={}, test=_test_split(50), regression_rows=10, seed=1, keep=2)
    assert rec2["version"] == "v0002" and len(reg.regression_set()) == 40  # frozen: not resampled
    reg.promote(models, train_ids=set(), record={}, keep=2)
    assert reg.versions() == ["v0002", "v0003"]  # keep=2 pruned v0001
    assert reg.production()["version"] == "v0003"


def test_rollback_and_errors(tmp_path):
    reg = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="no candidate model"):
        reg.promote(tmp_path / "nothing", train_ids=set(), record={})
    models = _candidate(tmp_path / "models", "w")
    reg.promote(models, train_ids=set(), record={"n": 1})
    reg.promote(models, train_ids=set(), record={"n": 2})
    assert reg.set_production("v0001")["n"] == 1 and reg.production()["version"] == "v0001"
    with pytest.raises(RegistryError, match="no such version"):
        reg.set_production("v0009")


def test_history_appends(tmp_path):
    reg = Registry(tmp_path)
    reg.log_decision({"promoted": None, "reasons": ["worse"]})
    reg.log_decision({"promoted": "v0001"})
    h = reg.history()
    assert [e["promoted"] for e in h] == [None, "v0001"] and all("at" in e for e in h)


def test_continual_replay_mix_and_production_init(tmp_path):
    from tuneline.train.continual import production_init, replay_mix
    from tuneline.data.records import write_json

    train = pd.DataFrame({"id": [f"r{i}" for i in range(20)], "text": "t", "label": "ham"})
    seen = {f"r{i}" for i in range(15)}
    mixed, info = replay_mix(train, seen, ratio=1.0, seed=0)
    assert info == {"new_rows": 5, "seen_rows": 15, "replay_rows": 5, "replay_ratio": 1.0, "rows": 10}
    assert set(mixed["id"]) >= {f"r{i}" for i in range(15, 20)}
    assert replay_mix(train, seen, ratio=0.0, seed=0)[1]["rows"] == 5  # new rows only
    assert replay_mix(train, seen, ratio=10.0, seed=0)[1]["replay_rows"] == 15  # capped at what exists
    assert list(replay_mix(train, seen, 1.0, 0)[0]["id"]) == list(mixed["id"])  # seeded

    models, reg_dir = tmp_path / "models", tmp_path / "registry"
    write_json({"version": None}, models / "production.json")
    assert production_init(models, reg_dir) is None
    reg = Registry(reg_dir)
    rec = reg.promote(_candidate(tmp_path / "cand", "w"), train_ids={"r1", "r2"}, record={})
    write_json(reg.pointer_snapshot(), models / "production.json")
    init = production_init(models, reg_dir)
    assert init.version == rec["version"] and init.seen == {"r1", "r2"} and init.model_dir.name == "finetuned"
