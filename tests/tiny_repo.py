"""One real `dvc repro` of the whole DAG on a tiny dataset, in a temporary copy of the repo.

The copy gets a params.yaml override: collect reads a small CSV written here (with personal data
in it), train starts from the tiny BERT fixture, budgets are minimal. `run_tiny_pipeline` runs it
once; conftest's session fixture `tiny_pipeline` shares it between the end-to-end tests (which go
on to change params and rerun stages in the repo) and the report tests, which read `outputs`: a
copy of reports/ and the model card taken right after the first `dvc repro`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from tests.conftest import make_texts

ROOT = Path(__file__).resolve().parents[1]
PII_ROWS = [
    ("Call me on 07781 482378 tonight, John", "ham"),
    ("Mail jane.doe@example.com about the tickets", "ham"),
    ("URGENT! Claim your prize, call 09061701461 now", "spam"),
    ("WIN cash: text WIN to 87121 or email claims@prize-win.co.uk", "spam"),
    ("my card 4111 1111 1111 1111 got charged twice", "ham"),
]


@dataclass(frozen=True)
class TinyRun:
    repo: Path
    """The temporary repo (a git repository with one commit, made before the run)."""
    env: dict
    df: pd.DataFrame
    """The rows of the CSV the collect stage read."""
    first: str
    """stdout + stderr of the first `dvc repro`."""
    outputs: Path
    """reports/ and models/calibrated/README.md as the first `dvc repro` left them (under reports/, models/)."""


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


def run_cmd(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def run_tiny_pipeline(tmp: Path, model_dir: Path) -> TinyRun:
    repo = tmp / "repo"
    repo.mkdir()
    _copy_repo(repo)
    df = make_texts(160, seed=5)
    df = pd.concat([df, pd.DataFrame(PII_ROWS, columns=["text", "label"])], ignore_index=True)
    csv = repo / "tiny.csv"
    df.to_csv(csv, index=False)
    params = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()), csv, model_dir)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TUNELINE_OFFLINE": "1", "PYTHONPATH": str(repo)}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    run_cmd(["git", "init", "-q"], repo, env)
    run_cmd(git + ["add", "-A"], repo, env)
    run_cmd(git + ["commit", "-qm", "tiny"], repo, env)
    first = run_cmd(["dvc", "repro"], repo, env)
    outputs = tmp / "outputs"
    shutil.copytree(repo / "reports", outputs / "reports")
    (outputs / "models/calibrated").mkdir(parents=True)
    shutil.copy2(repo / "models/calibrated/README.md", outputs / "models/calibrated/README.md")
    shutil.copy2(repo / "params.yaml", outputs / "params.yaml")
    return TinyRun(repo, env, df, first, outputs)
