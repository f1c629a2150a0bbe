"""The train stage end to end on a tiny BERT: outputs, kill-and-resume, bad params."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from stages import train as train_stage
from tests.conftest import make_texts, single_thread
from tuneline.train.models import load_finetuned
from tuneline.params import ParamsError, load_params
from tuneline.tasks.labels import LabelError
from tuneline.data.records import write_parquet
from tuneline.train.loop import CHECKPOINT, load_checkpoint

LABELS = ["ham", "spam"]


def make_project(root: Path, repo_root: Path, tiny_model_dir: Path, n_train: int = 96, **train) -> Path:
    """A folder with params.yaml (the repo's, with a tiny train section) and data/splits/."""
    data = yaml.safe_load((repo_root / "params.yaml").read_text())
    data["base"] = {"seed": 7, "tasks": ["classification"]}
    data["classification"] = {"labels": LABELS}
    data["train"] = {"base_model": {"kind": "local", "path": str(tiny_model_dir)}, "max_length": 32,
                     "batch_size": 8, "epochs": 2, "lr": 5e-3, "checkpoint_every": 4,
                     "early_stopping": {"patience": 0}, **train}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(data))
    df = make_texts(n_train + 40, seed=5)
    write_parquet(df[:n_train], root / "data/splits/train.parquet")
    write_parquet(df[n_train:], root / "data/splits/val.parquet")
    return root


def project_paths(root: Path):
    """The project's params with every path made absolute (run() in this process, cwd elsewhere)."""
    p = load_params(root / "params.yaml")
    paths = p.paths.model_copy(update={k: str(root / v) for k, v in p.paths.model_dump().items() if k != "cache"})
    return p, paths


def test_stage_writes_model_metrics_and_curves(tmp_path, repo_root, tiny_model_dir):
    root = make_project(tmp_path / "proj", repo_root, tiny_model_dir, method="lora", eval_every=6)
    p, paths = project_paths(root)
    with single_thread():
        m = train_stage.run(p.train, p.base, p.classification, paths)
    assert m["method"] == "lora" and m["device"] == "cpu" and m["precision"] == "fp32"
    assert 0 < m["trainable_params"] < m["total_params"] and m["steps"] == 24 and m["epochs_run"] == 2
    assert set(m["val"]) == {"loss", "accuracy", "macro_f1", "f1"} and set(m["val"]["f1"]) == set(LABELS)
    on_disk = json.loads((root / "reports/metrics/train.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    steps = pd.read_csv(root / "reports/plots/train_steps.tsv", sep="\t")
    evals = pd.read_csv(root / "reports/plots/train_val.tsv", sep="\t")
    assert list(steps.columns) == ["step", "epoch", "loss", "lr"] and len(steps) == 24
    assert {"step", "loss", "accuracy", "macro_f1", "f1_ham", "f1_spam"} <= set(evals.columns)
    assert evals["step"].tolist() == [6, 12, 18, 24]
    ft = load_finetuned(root / "models/finetuned")
    assert ft.labels == LABELS and ft.meta["method"] == "lora" and ft.meta["max_length"] == 32
    assert (root / "models/finetuned/adapter/adapter_config.json").exists()
    assert not list((root / "models/checkpoints").glob("train-*"))  # removed after success
    assert m["checkpoint_mb"] > 0 and m["stale_checkpoints_removed_mb"] == 0  # 5 checkpoints written, then removed


def _checkpoint_file(root: Path) -> Path | None:
    found = list((root / "models/checkpoints").glob(f"train-*/{CHECKPOINT}"))
    return found[0] if found else None


def _kill_at_first_checkpoint(cmd: list[str], cwd: Path, env: dict, log: Path, stale: Path | None = None) -> Path:
    """Start `cmd` (its own process group: dvc runs the stage in a child), SIGKILL the group once a
    checkpoint other than `stale` is on disk; that checkpoint."""
    def fresh():
        found = [f for f in (cwd / "models/checkpoints").glob(f"train-*/{CHECKPOINT}") if f.parent != stale]
        return found[0] if found else None

    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True)
        deadline = time.time() + 180
        while fresh() is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{log.read_text()[-2000:]}"
    return fresh()


def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path, repo_root, tiny_model_dir):
    settings = {"method": "full", "epochs": 3, "eval_every": 5, "dropout": 0.2,
                "early_stopping": {"metric": "macro_f1", "patience": 0}}
    killed = make_project(tmp_path / "killed", repo_root, tiny_model_dir, **settings)
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "killed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=killed, env=env, stdout=out, stderr=out)
        deadline = time.time() + 120
        while _checkpoint_file(killed) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{log.read_text()[-2000:]}"
    ckpt = _checkpoint_file(killed)
    at_step = torch.load(ckpt, weights_only=True)["loop"]["step"]
    total = 3 * 12
    assert 0 < at_step < total
    assert not (killed / "models/finetuned").exists()

    p, paths = project_paths(killed)
    with single_thread():
        resumed = train_stage.run(p.train, p.base, p.classification, paths)
    assert resumed["resumed_from_step"] >= at_step and resumed["steps"] == total
    assert resumed["checkpoint_mb"] > 0 and resumed["stale_checkpoints_removed_mb"] == 0  # reused, not removed
    assert list((killed / "models/checkpoints").iterdir()) == []  # then removed after the success

    fresh = make_project(tmp_path / "fresh", repo_root, tiny_model_dir, **settings)
    p2, paths2 = project_paths(fresh)
    with single_thread():
        straight = train_stage.run(p2.train, p2.base, p2.classification, paths2)
    assert straight["resumed_from_step"] == 0
    assert resumed["val"] == straight["val"] and resumed["best_step"] == straight["best_step"]
    a = load_file(killed / "models/finetuned/model.safetensors")
    b = load_file(fresh / "models/finetuned/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps_a = pd.read_csv(killed / "reports/plots/train_steps.tsv", sep="\t")
    steps_b = pd.read_csv(fresh / "reports/plots/train_steps.tsv", sep="\t")
    pd.testing.assert_frame_equal(steps_a, steps_b)  # the curve has no gap or repeat at the resume point


def test_a_changed_config_deletes_the_stale_checkpoint_at_its_start(tmp_path, repo_root, tiny_model_dir):
    """A killed run's checkpoint (other params) is gone before the new run writes its first one:
    at most one checkpoint on disk, and the freed space is reported."""
    root = make_project(tmp_path / "proj", repo_root, tiny_model_dir, method="full", epochs=3)
    stale = root / "models/checkpoints/train-0123456789abcdef"
    stale.mkdir(parents=True)
    torch.save({"fingerprint": "0" * 64, "loop": {"step": 4}, "w": torch.zeros(2**18)}, stale / CHECKPOINT)  # 1 MB
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    ckpt = _kill_at_first_checkpoint([sys.executable, "-m", "stages.train"], root, env, tmp_path / "run.log", stale)
    assert not stale.exists() and list((root / "models/checkpoints").iterdir()) == [ckpt.parent]
    assert "removed 1.0 MB of checkpoints written for other params or data" in (tmp_path / "run.log").read_text()

    stale.mkdir()
    torch.save({"fingerprint": "0" * 64, "w": torch.zeros(2**18)}, stale / CHECKPOINT)
    p, paths = project_paths(root)
    with single_thread():
        m = train_stage.run(p.train, p.base, p.classification, paths)
    assert m["resumed_from_step"] > 0 and m["stale_checkpoints_removed_mb"] == 1.0 and m["checkpoint_mb"] > 0
    assert list((root / "models/checkpoints").iterdir()) == []


def test_after_a_kill_dvc_runs_train_instead_of_restoring_and_no_checkpoint_is_left(tmp_path, repo_root,
                                                                                       tiny_model_dir):
    """The real train stage of dvc.yaml in a temporary repo: trained with params A, killed with B, then
    back to A. DVC could restore A's outputs (run-cache / dvc.lock) and never run train, leaving B's
    checkpoint for good; the `persist` output makes it run train, which deletes it."""
    from tests.tiny_repo import _copy_repo, run_cmd

    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stages["train"]}}))
    make_project(repo, repo_root, tiny_model_dir, method="full", epochs=1, n_train=48)
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models/production.json").write_text('{"version": null}\n')
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    for cmd in (["git", "init", "-q"], git + ["add", "-A"], git + ["commit", "-qm", "a"]):
        run_cmd(cmd, repo, env)
    params_a = (repo / "params.yaml").read_text()
    assert "Running stage 'train'" in run_cmd(["dvc", "repro", "train"], repo, env)

    params_b = yaml.safe_load(params_a)
    params_b["train"].update(epochs=4, lr=1e-3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params_b))
    ckpt_b = _kill_at_first_checkpoint(["dvc", "repro", "train"], repo, env, tmp_path / "b.log")
    assert ckpt_b is not None and not (repo / "models/finetuned").exists()

    (repo / "params.yaml").write_text(params_a)
    out = run_cmd(["dvc", "repro", "train"], repo, env)
    assert "Running stage 'train'" in out and "skipping run" not in out, out
    assert list((repo / "models/checkpoints").iterdir()) == []
    m = json.loads((repo / "reports/metrics/train.json").read_text())
    assert m["stale_checkpoints_removed_mb"] > 0 and m["resumed_from_step"] == 0
    assert "Data and pipelines are up to date" in run_cmd(["dvc", "status"], repo, env)


def test_a_checkpoint_of_other_params_or_data_is_not_resumed(tmp_path):
    path = tmp_path / CHECKPOINT
    torch.save({"fingerprint": "a" * 64, "loop": {"step": 3}}, path)
    assert load_checkpoint(path, "a" * 64)["loop"]["step"] == 3
    assert load_checkpoint(path, "b" * 64) is None
    path.write_bytes(b"truncated")
    assert load_checkpoint(path, "a" * 64) is None


@pytest.mark.parametrize("change, message", [
    ({"method": "qlora"}, r"train\.method: Input should be 'full', 'lora'"),
    ({"lora": {"r": -4}}, r"train\.lora\.r: Input should be greater than or equal to 1"),
    ({"layer_lr_decay": 1.5}, r"train\.layer_lr_decay: Input should be less than or equal to 1"),
    ({"lr": 0}, r"train\.lr: Input should be greater than 0"),
    ({"bach_size": 8}, r"train\.bach_size: Extra inputs are not permitted"),
])
def test_bad_params_are_clear_errors(tmp_path, repo_root, tiny_model_dir, change, message):
    root = make_project(tmp_path, repo_root, tiny_model_dir, **change)
    with pytest.raises(ParamsError, match=message):
        load_params(root / "params.yaml")


def test_labels_outside_the_label_set_are_a_clear_error(tmp_path, repo_root, tiny_model_dir):
    root = make_project(tmp_path, repo_root, tiny_model_dir)
    df = pd.read_parquet(root / "data/splits/train.parquet")
    df.loc[0, "label"] = "phishing"
    write_parquet(df, root / "data/splits/train.parquet")
    p, paths = project_paths(root)
    with pytest.raises(LabelError, match=r"train.parquet: labels \['phishing'\] are not in classification.labels"):
        train_stage.run(p.train, p.base, p.classification, paths)


@pytest.mark.slow
def test_default_minilm_lora_trains_under_one_percent_and_full_learns(repo_root):
    """The real base model from params.yaml (pinned PyPI artifact): LoRA's share and a short full run."""
    import numpy as np

    from tuneline.data import assets
    from tuneline.train.methods import apply_method
    from tuneline.train.models import build_classifier, count_parameters
    from tuneline.tasks.classification import fit

    params = load_params(repo_root / "params.yaml")
    base_dir = assets.resolve_model(params.train.base_model, params.paths.cache)
    lora = params.train.model_copy(update={"method": "lora"})
    model, _ = build_classifier(base_dir, LABELS)
    trainable, total = count_parameters(apply_method(model, lora, base_dir))
    assert trainable / total < 0.01

    torch.manual_seed(0)
    model, tok = build_classifier(base_dir, LABELS)
    df = make_texts(320, seed=9)
    y = (df["label"] == "spam").to_numpy().astype(np.int64)
    p = params.train.model_copy(update={"max_steps": 30, "max_length": 32, "threads": 0})
    res = fit(model, tok, df.text.tolist()[:256], y[:256], df.text.tolist()[256:], y[256:], LABELS, p, seed=0,
              progress=False)
    assert res.best["accuracy"] >= 0.95 and res.device == ("cuda" if torch.cuda.is_available() else "cpu")
