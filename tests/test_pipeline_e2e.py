"""End to end: real `dvc repro` of the whole DAG on a tiny dataset in a temporary copy of the repo.

The copy gets a params.yaml override (tests/tiny_repo.py): collect reads a small CSV with personal
data in it, train starts from the tiny BERT fixture, budgets are minimal. Then:
- every stage ran and its outputs exist; the splits hold no e-mail address or phone number;
- counts reconcile across collect -> clean -> split;
- a second `dvc repro` changes nothing ("up to date");
- changing one params section reruns only the stages that read it;
- the leak audit (last stage) passes, and a value planted after clean fails it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.tiny_repo import run_cmd
from tuneline.data.pii.leaks import LEAK_PATTERNS


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    """The session's tiny `dvc repro` (conftest `tiny_pipeline`); these tests go on to change it."""
    run = tiny_pipeline
    return run.repo, run.env, run.df, run.first


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
    out = run_cmd(["dvc", "repro"], repo, env)
    assert re.findall(r"Running stage '([^']+)'", out) == [], out
    assert (repo / "dvc.lock").read_bytes() == lock
    # a forced snapshot of unchanged state writes the same bytes: nothing after it reruns
    out = run_cmd(["dvc", "repro", "-f", "-s", "snapshot"], repo, env)
    out += run_cmd(["dvc", "repro"], repo, env)
    assert re.findall(r"Running stage '([^']+)'", out) == ["snapshot"], out


def test_changing_a_section_reruns_only_its_stages(pipeline):
    repo, env, _, _ = pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["split"]["folds"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run_cmd(["dvc", "repro", "split"], repo, env)
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
        out = run_cmd(["dvc", "exp", "run", "-S", f"train.method={method}", "-n", f"m-{method}", "train"], repo, env)
        assert "Running stage 'train'" in out, out
        m = yaml.safe_load((repo / "reports/metrics/train.json").read_text())
        assert m["method"] == method
        assert 0 < m["trainable_params"] <= m["total_params"]
        seen[method] = m["trainable_pct"]
    assert seen["full"] == 100.0 and all(seen[k] < 100.0 for k in methods if k != "full"), seen
    listed = run_cmd(["dvc", "exp", "list", "--name-only"], repo, env)
    assert {f"m-{m}" for m in methods} <= set(listed.split()), listed


def test_audit_scans_every_shipped_artifact_and_stops_dvc_on_a_planted_value(pipeline):
    """The audit stage (last) passed on the tiny run, scanned the splits, every metrics file, the
    reports, mistakes and the model card, each a declared dep; a value planted after clean fails
    `dvc repro` naming file, line and detector, never the value."""
    import json

    repo, env, _, _ = pipeline
    summary = json.loads((repo / "reports/metrics/audit.json").read_text())
    assert summary["passed"] is True and summary["hits"] == 0, summary["findings"]
    scanned = {f["path"] for f in summary["files"]}
    assert {"data/splits/train.parquet", "data/splits/val.parquet", "data/splits/test.parquet",
            "reports/mistakes.json", "reports/index.html", "reports/report.md", "reports/validation.html",
            "reports/metrics/clean.json", "reports/metrics/evaluate.json", "models/calibrated/README.md"} <= scanned
    paths = yaml.safe_load((repo / "params.yaml").read_text())["paths"]
    deps = {re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], d)
            for d in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["audit"]["deps"]}
    undeclared = {f for f in scanned if f not in deps and str(Path(f).parent) not in deps}
    assert not undeclared, f"the audit reads files dvc.yaml does not list as its deps: {sorted(undeclared)}"

    card = repo / "models/calibrated/README.md"
    original = card.read_text()
    planted = "jane.doe@example.com"
    card.write_text(original + f"\nQuestions: {planted}\n")
    try:
        proc = subprocess.run(["dvc", "repro", "--single-item", "audit"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        line = len(original.splitlines()) + 2
        assert f"models/calibrated/README.md: line {line}: email" in out, out
        saved = (repo / "reports/metrics/audit.json").read_text()
        assert json.loads(saved)["hits_per_detector"]["email"] == 1
        assert planted not in out and planted not in saved
    finally:
        card.write_text(original)
