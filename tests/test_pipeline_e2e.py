"""End to end: real `dvc repro` of the whole DAG on a tiny dataset in a temporary copy of the repo.

The copy gets a params.yaml override: collect reads a small CSV written here (with personal data
in it), train starts from the tiny BERT fixture, budgets are minimal. Then:
- every stage ran and its outputs exist; the splits hold no e-mail address or phone number;
- counts reconcile across collect -> clean -> split;
- a second `dvc repro` changes nothing ("up to date");
- changing one params section reruns only the stages that read it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import make_texts
from tuneline.data.pii.leaks import LEAK_PATTERNS

ROOT = Path(__file__).resolve().parents[1]
PII_ROWS = [
    ("Call me on 07781 482378 tonight, John", "ham"),
    ("Mail jane.doe@example.com about the tickets", "ham"),
    ("URGENT! Claim your prize, call 09061701461 now", "spam"),
    ("WIN cash: text WIN to 87121 or email claims@prize-win.co.uk", "spam"),
    ("my card 4111 1111 1111 1111 got charged twice", "ham"),
]


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("reports/", "data/", "models/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def tiny_params(repo_params: dict, csv: Path, model_dir: Path) -> dict:
    """The repo's params with the data, model and budgets shrunk for a test."""
    p = yaml.safe_load(yaml.safe_dump(repo_params))
    p["collect"]["datasets"] = [{"name": "tiny", "source": {"kind": "local", "path": str(csv)}, "format": "csv"}]
    p["validate"]["min_rows_per_class"] = 5
    p["clean"]["n_process"] = 1
    t = p["train"]
    t.update(base_model={"kind": "local", "path": str(model_dir)}, epochs=2, batch_size=16, max_length=32,
             checkpoint_every=0, threads=1, lr=1e-3)
    p["evaluate"]["n_bootstrap"] = 50
    c = p["compress"]
    c.update(n_bootstrap=50, threads=1)
    c["latency"].update(batch1_examples=5, batch32_batches=2, warmup=1)
    for v in c["variants"]:
        for key in ("epochs", "recovery_epochs"):
            if key in v:
                v[key] = min(v[key], 0.5)
        if "importance_batches" in v:
            v["importance_batches"] = 2
    if "gate" in p:
        p["gate"].update(regression_rows=20, min_eval_rows=5)
    return p


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_model_dir):
    repo = tmp_path_factory.mktemp("repo")
    _copy_repo(repo)
    df = make_texts(160, seed=5)
    df = pd.concat([df, pd.DataFrame(PII_ROWS, columns=["text", "label"])], ignore_index=True)
    csv = repo / "tiny.csv"
    df.to_csv(csv, index=False)
    params = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()), csv, tiny_model_dir)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TUNELINE_OFFLINE": "1", "PYTHONPATH": str(repo)}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    _run(["git", "init", "-q"], repo, env)
    _run(git + ["add", "-A"], repo, env)
    _run(git + ["commit", "-qm", "tiny"], repo, env)
    first = _run(["dvc", "repro"], repo, env)
    return repo, env, df, first


def test_every_stage_ran(pipeline):
    repo, _, _, out = pipeline
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name in stages:
        assert f"'{name}'" in out, f"stage {name} did not run:\n{out[-3000:]}"
    assert (repo / "dvc.lock").exists()


def test_counts_reconcile_and_no_pii_left(pipeline):
    repo, _, df, _ = pipeline
    m = yaml.safe_load((repo / "reports/metrics/collect.json").read_text())
    c = yaml.safe_load((repo / "reports/metrics/clean.json").read_text())
    s = yaml.safe_load((repo / "reports/metrics/split.json").read_text())
    assert m["rows_read"] == len(df) == m["rows_out"] + m["duplicates"] + m["rows_rejected"]
    assert c["rows_in"] == m["rows_out"] == c["rows_out"] + c["rows_rejected"]
    assert s["rows_in"] == c["rows_out"] == s["rows_out"]
    texts = pd.concat([pd.read_parquet(p) for p in (repo / "data/splits").glob("*.parquet")])["text"]
    for name, pattern in LEAK_PATTERNS.items():
        left = texts[texts.str.contains(pattern, regex=True, flags=re.I)]
        assert left.empty, f"{name} pattern left in splits: {left.tolist()[:3]}"
    assert texts.str.contains("<PHONE_NUMBER>").any() and texts.str.contains("<EMAIL_ADDRESS>").any()


def test_second_repro_is_a_noop(pipeline):
    repo, env, _, _ = pipeline
    lock = (repo / "dvc.lock").read_bytes()
    out = _run(["dvc", "repro"], repo, env)
    assert re.findall(r"Running stage '([^']+)'", out) == [], out
    assert (repo / "dvc.lock").read_bytes() == lock
    # a forced snapshot of unchanged state writes the same bytes: nothing after it reruns
    out = _run(["dvc", "repro", "-f", "-s", "snapshot"], repo, env)
    out += _run(["dvc", "repro"], repo, env)
    assert re.findall(r"Running stage '([^']+)'", out) == ["snapshot"], out


def test_changing_a_section_reruns_only_its_stages(pipeline):
    repo, env, _, _ = pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["split"]["folds"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro", "split"], repo, env)
    assert "Running stage 'split'" in out
    assert not any(f"Running stage '{s}'" in out for s in ("collect", "clean", "validate")), out
    assert "fold" in pd.read_parquet(repo / "data/splits/train.parquet").columns


def test_exp_run_every_method(pipeline):
    """`dvc exp run -S train.method=X` (the README's way to compare methods) works for every method
    (target `train`: the stages after it are the same for every method and tested above)."""
    from typing import get_args

    from tuneline.params import Method

    repo, env, _, _ = pipeline
    env = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    methods = list(get_args(Method))
    assert len(methods) == 7
    seen = {}
    for method in methods:
        out = _run(["dvc", "exp", "run", "-S", f"train.method={method}", "-n", f"m-{method}", "train"], repo, env)
        assert "Running stage 'train'" in out, out
        m = yaml.safe_load((repo / "reports/metrics/train.json").read_text())
        assert m["method"] == method
        assert 0 < m["trainable_params"] <= m["total_params"]
        seen[method] = m["trainable_pct"]
    assert seen["full"] == 100.0 and all(seen[k] < 100.0 for k in methods if k != "full"), seen
    listed = _run(["dvc", "exp", "list", "--name-only"], repo, env)
    assert {f"m-{m}" for m in methods} <= set(listed.split()), listed
