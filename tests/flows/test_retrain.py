"""The retraining flow end to end under a real Prefect server, on a copy of this repository with a
tiny config (tiny CSV, tiny BERT, pattern-only PII): every DVC stage as a task, the gate, the
promotion into the registry, the API serving the promoted model, feedback posted over HTTP, and
a second retraining that trains on that feedback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from flows.retrain import summary_markdown, topological
from tuneline.params import load_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server, once per session (its start costs ~20 s on 2 cores)."""
    import os

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# --------------------------------------------------------------------------- cheap checks
def test_topological_order_respects_edges_and_file_order():
    names = ["report", "snapshot", "collect", "train", "gate"]
    edges = [("snapshot", "collect"), ("collect", "train"), ("train", "gate"), ("gate", "report"),
             ("train", "report")]
    assert topological(names, edges) == ["snapshot", "collect", "train", "gate", "report"]
    assert topological(["b", "a"], []) == ["b", "a"]  # no edges: dvc.yaml order
    with pytest.raises(RuntimeError, match="cycle"):
        topological(["a", "b"], [("a", "b"), ("b", "a")])


def test_stage_order_of_this_repository():
    from flows.retrain import stage_order

    order = stage_order(ROOT)
    assert order[0] == "snapshot" and order.index("collect") < order.index("split") < order.index("gate")
    assert order[-1] == "audit"  # the leak audit sees every shipped artifact, and runs before any promotion


def test_promotion_requires_a_passed_audit(tmp_path):
    from flows.retrain import require_audit

    params = load_params(ROOT / "params.yaml")
    order = ["snapshot", "gate", "audit"]
    summary = tmp_path / params.paths.metrics / "audit.json"
    with pytest.raises(RuntimeError, match="leak audit did not run"):
        require_audit(tmp_path, params, order)
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"passed": False, "hits": 3}))
    with pytest.raises(RuntimeError, match="found 3 personal-data hit"):
        require_audit(tmp_path, params, order)
    with pytest.raises(RuntimeError, match="no `audit` stage"):
        require_audit(tmp_path, params, ["snapshot", "gate"])
    summary.write_text(json.dumps({"passed": True, "hits": 0}))
    assert require_audit(tmp_path, params, order)["passed"] is True


def test_prefect_yaml_matches_params():
    """The deployment's schedule is the one `flows.retrain serve` uses, and its entrypoint is the flow."""
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    p = load_params(ROOT / "params.yaml").retrain
    [dep] = doc["deployments"]
    [schedule] = dep["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == (p.cron, p.timezone)
    path, name = dep["entrypoint"].split(":")
    import flows.retrain as mod

    assert (ROOT / path).resolve() == Path(mod.__file__).resolve() and getattr(mod, name).name == mod.FLOW_NAME
    assert dep["concurrency_limit"] == 1


def test_served_schedule_comes_from_params():
    from flows.retrain import scheduled_deployment

    p = load_params(ROOT / "params.yaml").retrain
    dep = scheduled_deployment(str(ROOT), p)
    [sched] = dep.schedules
    assert (sched.schedule.cron, sched.schedule.timezone) == (p.cron, p.timezone)
    assert dep.parameters == {"repo": str(ROOT)} and dep.concurrency_limit == 1


def test_summary_markdown_shows_a_rejection():
    gate = {"decision": {"promote": False, "summary": "reject: worse", "checks": [
        {"name": "better", "passed": False, "detail": "test macro_f1: candidate 0.8 vs production 0.9"}]},
        "candidate": {"test": {"n": 40, "accuracy": 0.8, "macro_f1": 0.8, "ece": 0.1, "nll": 0.5}},
        "production": {"version": "v0001", "test": {"n": 40, "accuracy": 0.9, "macro_f1": 0.9}}, "rows": {}}
    md = summary_markdown(gate, None, [{"stage": "train", "ran": True, "seconds": 1.0}], Path("/nonexistent"))
    assert "Candidate REJECTED" in md and "| better | NO |" in md and "production v0001" in md


# --------------------------------------------------------------------------- end to end
def _git_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f]


def make_repo(dest: Path, tiny_model_dir: Path, stages: list[str] | None = None) -> Path:
    """This checkout's files (tracked and new, not ignored) in `dest`, a tiny params.yaml, one commit.
    `stages` keeps only those stages of dvc.yaml (the flow runs whatever dvc.yaml lists)."""
    for rel in _git_files(ROOT):
        src = ROOT / rel
        if src.is_file() and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tuneline_tests_conftest", ROOT / "tests" / "conftest.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    make_texts = fixtures.make_texts

    raw = dest / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    make_texts(200, seed=3).to_csv(raw / "tiny.csv", index=False)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["collect"]["datasets"] = [{"name": "tiny", "source": {"kind": "local", "path": "data/raw/tiny.csv"},
                                      "format": "csv", "text_column": "text", "label_column": "label"}]
    params["clean"].update(spacy_model="none", pii_entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"],
                           n_process=1)
    params["paths"]["cache"] = str(dest / ".cache")
    tiny = {"base_model": {"kind": "local", "path": str(tiny_model_dir)}, "epochs": 3, "batch_size": 16,
            "max_length": 32, "lr": 3e-3, "warmup_ratio": 0.0, "checkpoint_every": 0}
    params.setdefault("train", {}).update(tiny)
    if "evaluate" in params:
        params["evaluate"]["n_bootstrap"] = 0
    if "compress" in params:  # one cheap variant, few timings
        params["compress"].update(variants=[{"kind": "quantize", "name": "int8", "source": "teacher"}], n_bootstrap=0,
                                  latency={"batch1_examples": 5, "batch32_batches": 1, "warmup": 0, "threads": 0})
    params["gate"].update(min_eval_rows=5, regression_rows=20)
    params["retrain"].update(retries=0, retry_delay_s=0)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if stages is not None:
        dvc = yaml.safe_load((dest / "dvc.yaml").read_text())
        dvc["stages"] = {k: v for k, v in dvc["stages"].items() if k in stages}
        dvc.pop("plots", None)
        (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny pipeline"], cwd=dest, check=True)
    return dest


def _artifact_markdown() -> str:
    """The newest `tuneline-retrain` artifact. Through the REST API directly: with this pin set
    (prefect 3.8.8, fastapi 0.154) the client's read_artifacts/Artifact.get send null filters
    that the server rejects with a 422."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        r = client._client.post("/artifacts/filter", json={"artifacts": {"key": {"any_": ["tuneline-retrain"]}},
                                                           "sort": "CREATED_DESC", "limit": 1, "offset": 0})
    r.raise_for_status()
    return r.json()[0]["data"]


def test_a_failing_stage_is_retried_then_fails_the_run(prefect_server, tmp_path):
    """retrain.retries from params.yaml: the stage runs 1 + retries times; the run fails naming it."""
    from flows.retrain import retrain

    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    (repo / ".dvc" / "config").write_text("[core]\n    analytics = false\n    no_scm = true\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["retrain"].update(retries=1, retry_delay_s=0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"boom": {
        "cmd": "echo attempt >> attempts.txt && echo 'no disk left' && exit 3", "outs": ["never.txt"]}}}))
    state = retrain(repo=str(repo), return_state=True)
    assert state.is_failed()
    assert (repo / "attempts.txt").read_text().count("attempt") == 2
    with pytest.raises(RuntimeError, match=r"dvc repro boom failed \(exit \d+\)[\s\S]*no disk left"):
        state.result()


def _post_feedback(url: str, n: int) -> list[int]:
    ids = []
    for i in range(n):
        label = "spam" if i % 2 else "ham"
        text = f"feedback {i} {'win cash prize claim' if i % 2 else 'home dinner later'} mail me a{i}@example.com"
        r = httpx.post(url + "/feedback", json={"text": text, "label": label}, headers={"Authorization": "Bearer t"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def test_feedback_round_trip_through_the_flow(prefect_server, tmp_path, tiny_model_dir):
    """Posted over HTTP -> snapshot -> collect -> clean -> split, every stage a Prefect task running
    `dvc repro`: the feedback is in the next training data. The data stages only (the full DAG,
    with training, the gate and promotion, is the slow test below)."""
    from flows.retrain import retrain
    from tuneline.deploy.feedback import FeedbackStore, default_url
    from tuneline.deploy.predictor import Predictor
    from apps.serve import create_app
    from tuneline.deploy.serving import build_anonymizer

    sys.path.insert(0, str(ROOT / "tests" / "apps"))
    from test_serve import Server, build_model_folder

    repo = make_repo(tmp_path / "repo", tiny_model_dir, stages=["snapshot", "collect", "clean", "validate", "split"])
    p = load_params(repo / "params.yaml")
    store = FeedbackStore(default_url(repo / p.paths.feedback))
    app = create_app(predictor=Predictor.load(build_model_folder(tiny_model_dir, tmp_path / "model"), "v0001"),
                     store=store, anonymize=build_anonymizer(p.clean), p=p.serve, token="t")
    with Server(app) as url:
        _post_feedback(url, 30)
    stored = {row["text"] for row in store.rows()}
    store.close()
    assert len(stored) == 30 and not any("example.com" in t for t in stored)

    state = retrain(repo=str(repo), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert [s["stage"] for s in result["stages"]] == ["snapshot", "collect", "clean", "validate", "split"]
    assert result["decision"] is None and result["promoted"] is None  # no gate stage in this dvc.yaml
    splits = pd.concat([pd.read_parquet(repo / p.paths.splits / f"{n}.parquet").assign(split=n)
                        for n in ("train", "val", "test")])
    fb = splits[splits["source"] == "feedback"]
    assert sorted(fb["text"]) == sorted(stored)  # each feedback row in exactly one split, anonymized
    assert (fb["split"] == "train").sum() > 0  # some of it is training data
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    snap = next(o for o in lock["stages"]["collect"]["deps"] if o["path"].endswith("snapshot.jsonl"))
    assert snap["md5"] == hashlib.md5((repo / p.paths.feedback / "snapshot.jsonl").read_bytes()).hexdigest()


@pytest.mark.slow
def test_retrain_flow_end_to_end(prefect_server, tmp_path, tiny_model_dir):
    from flows.retrain import retrain
    from tuneline.deploy.feedback import FeedbackStore, default_url
    from tuneline.deploy.predictor import Predictor
    from tuneline.deploy.registry import Registry
    from apps.serve import create_app
    from tuneline.deploy.serving import build_anonymizer

    sys.path.insert(0, str(ROOT / "tests" / "apps"))
    from test_serve import Server

    repo = make_repo(tmp_path / "repo", tiny_model_dir)
    p = load_params(repo / "params.yaml")
    registry = Registry(repo / p.paths.registry)
    remote = tmp_path / "dvc-remote"
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)], cwd=repo, check=True)

    # ---- run 1: no production yet -> the first candidate is promoted
    state = retrain(repo=str(repo), return_state=True)
    assert state.is_completed(), state.message
    first = state.result()
    assert first["promoted"] == "v0001" and first["production"] == "v0001"
    ran = {s["stage"]: s["ran"] for s in first["stages"]}
    assert list(ran)[0] == "snapshot" and all(ran.values())
    rec = registry.production()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert rec["git_commit"] == head
    assert rec["dvc_lock_sha256"] == hashlib.sha256((repo / "dvc.lock").read_bytes()).hexdigest()
    assert (registry.version_dir("v0001") / "lineage" / "dvc.lock").exists() and len(registry.regression_set()) > 0
    assert "PROMOTED as v0001" in _artifact_markdown()
    assert any(f.is_file() for f in remote.rglob("*"))  # dvc push after the promotion
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True, text=True)
    assert set(json.loads(status.stdout)) <= {"snapshot"}, status.stdout  # everything else is in dvc.lock

    # ---- serve v0001 and post feedback over HTTP
    store = FeedbackStore(default_url(repo / p.paths.feedback))
    app = create_app(predictor=Predictor.load(registry.version_dir("v0001"), "v0001"), store=store,
                     anonymize=build_anonymizer(p.clean), p=p.serve, token="t",
                     production_version=lambda: registry.production()["version"])
    with Server(app) as url:
        assert httpx.get(url + "/health").json()["model_version"] == "v0001"
        assert httpx.post(url + "/predict", json={"texts": ["free prize now"]}).status_code == 200
        _post_feedback(url, 40)
    stored = {row["id"]: row["text"] for row in store.rows()}
    store.close()
    assert len(stored) == 40 and not any("example.com" in t for t in stored.values())

    # ---- run 2: the feedback is a changed input and reaches the training data. The margin is set
    # out of reach (a candidate cannot gain more than 1.0), so the gate must reject it, production
    # must stay v0001, and the reason must be visible in the run, its artifact and the history.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["gate"]["margin"] = 1.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = registry.production()
    state = retrain(repo=str(repo), return_state=True)
    assert state.is_completed(), state.message  # a rejection is a normal outcome, not a failed run
    second = state.result()
    ran = {s["stage"]: s["ran"] for s in second["stages"]}
    assert ran["collect"] and ran["split"] and ran["train"] and ran["gate"]
    splits = {n: pd.read_parquet(repo / p.paths.splits / f"{n}.parquet") for n in ("train", "val", "test")}
    fb = {n: df[df["source"] == "feedback"] for n, df in splits.items()}
    assert sum(len(df) for df in fb.values()) == 40  # every feedback row landed in exactly one split
    assert len(fb["train"]) > 0 and set(fb["train"]["text"]) <= set(stored.values())  # in the training data
    gate = json.loads((repo / p.paths.metrics / "gate.json").read_text())
    assert gate["production"]["version"] == "v0001" and gate["candidate"]["regression"]["n"] > 0
    assert second["promoted"] is None and not second["decision"]["promote"]
    assert any("needs > +1.0000" in r for r in second["decision"]["reasons"])
    assert registry.production() == before and registry.versions() == ["v0001"]
    assert "Candidate REJECTED" in _artifact_markdown()
    history = registry.history()
    assert [h["promoted"] for h in history] == ["v0001", None] and history[-1]["decision"]["reasons"]
