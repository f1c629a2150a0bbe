"""train with init_from production: continue from the registry's production model on new rows + replay."""

from pathlib import Path

import pytest

from stages import train
from tiny_pipeline import base_params, task_params, make_paths, train_tiny, write_splits
from tuneline.data.assets import tree_sha256
from tuneline.train.models import load_finetuned
from tuneline.params import TrainParams
from tuneline.data.records import read_json, write_json
from tuneline.deploy.registry import Registry


@pytest.fixture(scope="module")
def prod(tmp_path_factory, tiny_model_dir):
    """Splits and a registry whose production model trained on the first 150 of 200 train rows."""
    root = tmp_path_factory.mktemp("continual")
    paths = make_paths(root)
    splits = write_splits(paths)
    seen = splits["train"].iloc[:150]
    cand = root / "cand"
    train_tiny(tiny_model_dir, seen, cand / "finetuned", epochs=1, max_length=32)
    reg = Registry(paths.registry)
    reg.promote(cand, train_ids=set(seen["id"]), record={"finetuned_sha256": tree_sha256(cand / "finetuned")})
    write_json(reg.pointer_snapshot(), Path(paths.models) / "production.json")
    return paths, splits, reg


def _params(tiny_model_dir, **kw) -> TrainParams:
    return TrainParams.model_validate({"base_model": {"kind": "local", "path": str(tiny_model_dir)}, "epochs": 1,
                                       "batch_size": 16, "max_length": 32, "checkpoint_every": 0, "lr": 1e-3,
                                       "init_from": "production", **kw})


def test_continues_from_production_on_new_rows_plus_replay(prod, tiny_model_dir):
    paths, splits, reg = prod
    m = train.run(_params(tiny_model_dir, replay_ratio=0.5), base_params(), task_params(), paths)
    unseen = int((~splits["train"]["id"].isin(reg.train_ids("v0001"))).sum())
    assert m["continual"]["new_rows"] == unseen and m["continual"]["replay_rows"] == round(0.5 * unseen)
    assert m["train_rows"] == unseen + round(0.5 * unseen) and m["continual"]["init_version"] == "v0001"
    ft = load_finetuned(Path(paths.models) / "finetuned")
    assert ft.meta["init_from"] == "production" and ft.meta["init_version"] == "v0001"
    # it started from production's weights, not the base: the embeddings (lr 1e-3, few steps) stay close
    prod_ft = load_finetuned(reg.version_dir("v0001") / "finetuned")
    base_emb = __import__("transformers").AutoModel.from_pretrained(tiny_model_dir).embeddings.word_embeddings.weight
    emb, prod_emb = (x.model.bert.embeddings.word_embeddings.weight for x in (ft, prod_ft))
    assert (emb - prod_emb).abs().mean() < (emb - base_emb).abs().mean()


def test_nothing_new_keeps_production(prod, tiny_model_dir):
    paths, splits, reg = prod
    everything = Registry(paths.registry)
    # a production that has seen every row: the candidate is production itself, byte for byte
    cand = Path(paths.models).parent / "cand2"
    import shutil

    shutil.copytree(reg.version_dir("v0001") / "finetuned", cand / "finetuned")
    everything.promote(cand, train_ids=set(splits["train"]["id"]), record={})
    write_json(everything.pointer_snapshot(), Path(paths.models) / "production.json")
    m = train.run(_params(tiny_model_dir), base_params(), task_params(), paths)
    assert m["continual"]["kept_production"] and m["continual"]["new_rows"] == 0 and m["steps"] == 0
    assert tree_sha256(Path(paths.models) / "finetuned") == tree_sha256(everything.version_dir("v0002") / "finetuned")
    assert read_json(Path(paths.metrics) / "train.json") == m


def test_unmerged_method_cannot_continue(prod, tiny_model_dir):
    paths, _, _ = prod
    with pytest.raises(train.TrainError, match="merged method"):
        train.run(_params(tiny_model_dir, method="prefix"), base_params(), task_params(), paths)
