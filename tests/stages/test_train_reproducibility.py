"""What reproduces where (README "What reproduces where"), on emulated processors.

Each run is `python -m stages.train` in its own process on a tiny BERT, started with another
`ATEN_CPU_CAPABILITY` (the kernel level PyTorch picks per processor; an unsupported level falls back
to the best the CPU has, so this runs on any x86 machine):
- default mode: the val metrics agree to METRIC_DECIMALS decimals across them (the bytes may differ);
- strict mode: the stage restarts itself with the pinned environment, so the weights are
  byte-identical whatever the process started with (kernel level and thread count).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from stages import train as train_stage
from tests.stages.test_train import make_project, project_paths
from tuneline.train.reproducibility import STRICT_ENV, weights_sha256

METRIC_DECIMALS = 5
"""Decimals the val metrics agree to across processors in default mode: |delta| < 1e-5 (docs/benchmarks.md:
MiniLM on SMS, 32 steps, agreed to 6 decimals in NLL and exactly in accuracy and macro F1; the stage
rounds its metrics to 6 decimals, so 5 is the tightest claim a rounding boundary cannot break)."""

SETTINGS = {"method": "full", "epochs": 2, "eval_every": 0, "checkpoint_every": 0,
            "early_stopping": {"metric": "macro_f1", "patience": 0}}


def _start(root: Path, repo_root: Path, **env) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k not in STRICT_ENV}
    full.update({"PYTHONPATH": str(repo_root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env})
    log = open(root / "train.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=full, stdout=log, stderr=log)


def _train_all(tmp_path, repo_root, tiny_model_dir, mode: str, envs: dict[str, dict]) -> dict[str, tuple[dict, str]]:
    """Train one project per env concurrently; {name: (train.json, weights sha256)}."""
    procs = {}
    for name, env in envs.items():
        root = make_project(tmp_path / f"{mode}-{name}", repo_root, tiny_model_dir, reproducibility=mode, **SETTINGS)
        procs[name] = (root, _start(root, repo_root, **env))
    out = {}
    for name, (root, proc) in procs.items():
        assert proc.wait(timeout=600) == 0, (root / "train.log").read_text()[-3000:]
        metrics = json.loads((root / "reports/metrics/train.json").read_text())
        out[name] = (metrics, weights_sha256(load_file(root / "models/finetuned/model.safetensors")))
    return out


def test_default_mode_metrics_agree_across_kernel_levels(tmp_path, repo_root, tiny_model_dir):
    runs = _train_all(tmp_path, repo_root, tiny_model_dir, "default",
                      {"avx512": {"ATEN_CPU_CAPABILITY": "avx512"}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
                       "scalar": {"ATEN_CPU_CAPABILITY": "default"}})
    kernels = {name: m["cpu_kernels"] for name, (m, _) in runs.items()}
    assert kernels["avx2"] == "AVX2" and kernels["scalar"] == "DEFAULT", kernels
    ref = runs["avx2"][0]["val"]
    for name, (m, _) in runs.items():
        assert m["reproducibility"] == "default" and not m["deterministic"]
        for key in ("loss", "accuracy", "macro_f1"):
            assert abs(m["val"][key] - ref[key]) < 10 ** -METRIC_DECIMALS, (name, key, m["val"][key], ref[key])


def test_strict_mode_gives_the_same_bytes_whatever_the_process_started_with(tmp_path, repo_root, tiny_model_dir):
    runs = _train_all(tmp_path, repo_root, tiny_model_dir, "strict",
                      {"avx512-2threads": {"ATEN_CPU_CAPABILITY": "avx512", "OMP_NUM_THREADS": "2", "MKL_CBWR": "AUTO"},
                       "scalar-1thread": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}})
    for name, (m, _) in runs.items():
        assert m["reproducibility"] == "strict" and m["deterministic"] and m["threads"] == 1, (name, m)
        assert m["cpu_kernels"] == "AVX2", (name, m["cpu_kernels"])  # the pin won over the starting env
    (a, sha_a), (b, sha_b) = runs.values()
    assert sha_a == sha_b
    assert a["val"] == b["val"] and a["best_step"] == b["best_step"]


def test_strict_mode_refuses_a_process_without_the_pins(tmp_path, repo_root, tiny_model_dir, monkeypatch):
    for k in STRICT_ENV:
        monkeypatch.delenv(k, raising=False)
    root = make_project(tmp_path / "p", repo_root, tiny_model_dir, reproducibility="strict", **SETTINGS)
    p, paths = project_paths(root)
    with pytest.raises(train_stage.TrainError, match="ATEN_CPU_CAPABILITY=avx2.*python -m stages.train"):
        train_stage.run(p.train, p.base, p.classification, paths)
