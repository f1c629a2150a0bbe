"""Retrain on a schedule: run the DVC pipeline stage by stage, gate the candidate, promote it.

    python -m flows.retrain run      one retraining now (a temporary local Prefect server starts
                                     when no PREFECT_API_URL is set)
    python -m flows.retrain serve    serve the flow with the cron schedule in params.yaml
                                     (retrain.cron, retrain.timezone) until stopped; without
                                     PREFECT_API_URL it starts a local Prefect server (127.0.0.1:4200)
    python -m flows.retrain rollback v0002   point production at an earlier registry version
    prefect deploy --all             deploy it to a work pool instead (see prefect.yaml)

One Prefect task per DVC stage, in DAG order as DVC reports it (`dvc stage list`, `dvc dag`), each
running `dvc repro --single-item <stage>` with retries: DVC skips what is up to date and records
every artifact in dvc.lock, so a scheduled run and `dvc repro` at the command line give the same
result. The pipeline's first stage (snapshot) exports the feedback store, so new feedback is a
changed input; its gate stage writes the decision to reports/metrics/gate.json, and its last stage (audit) fails
the run when personal data is left in anything shipped. This flow then promotes an accepted candidate
(only after a passed audit) into the registry (${paths.registry}: a new version folder and the
production pointer, recording the git commit and the dvc.lock sha256), pushes to the DVC remote
when one is configured, logs every decision to the registry's history, and publishes a summary
as a Prefect artifact. A rejected candidate leaves production untouched.

No ML here: the stages train and judge; this module decides when, retries, and moves files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess  # nosec B404 # fixed argument lists, never a shell (each call below)
import sys
import time
from pathlib import Path

# Without PREFECT_API_URL, Prefect starts a temporary server and gives it 20 s; its first start on a
# fresh machine creates and migrates its SQLite database, which took longer than that on a 2-core
# box (README's `python -m flows.retrain run` failed with "Timed out ... ephemeral Prefect API
# server"). Set before prefect is imported: it reads its settings then. Both stay overridable.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402

from tuneline.data.assets import file_sha256, tree_sha256  # noqa: E402
from tuneline.params import Params, RetrainParams, load_params  # noqa: E402
from tuneline.data.records import read_json, read_parquet  # noqa: E402
from tuneline.deploy.registry import Registry  # noqa: E402

FLOW_NAME = "tuneline-retrain"
DEPLOYMENT_NAME = "scheduled"


# --------------------------------------------------------------------------- helpers
def _env() -> dict:
    """The stages run with this interpreter's environment (`python` in dvc.yaml cmds = ours)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # nosec B603 # this python's dvc


def stage_order(repo: Path) -> list[str]:
    """Stage names of dvc.yaml in an order that respects every dependency (file order breaks ties)."""
    listed = _dvc(repo, "stage", "list", "--name-only")
    if listed.returncode:
        raise RuntimeError(f"dvc stage list failed in {repo}:\n{listed.stdout}")
    names = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    dag = _dvc(repo, "dag", "--dot")
    if dag.returncode:
        raise RuntimeError(f"dvc dag failed in {repo}:\n{dag.stdout}")
    edges = re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dag.stdout)
    return topological(names, edges)


def topological(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm; among ready stages the one listed first in dvc.yaml goes first."""
    parents = {n: set() for n in names}
    for a, b in edges:
        if a in parents and b in parents:
            parents[b].add(a)
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and parents[n] <= set(order)]
        if not ready:
            raise RuntimeError(f"dvc.yaml has a cycle among {sorted(set(names) - set(order))}")
        order.append(ready[0])
    return order


def git_state(repo: Path) -> dict:
    def git(*args: str) -> str | None:
        r = subprocess.run(["git", *args], cwd=repo, text=True,
                           capture_output=True)  # nosec B603 B607 # the user's git from PATH, read-only args
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def _lock_sha256(root: Path) -> str | None:
    lock = root / "dvc.lock"
    return file_sha256(lock) if lock.exists() else None


def require_audit(root: Path, params: Params, order: list[str]) -> dict:
    """The leak audit's summary, if the pipeline has an `audit` stage and it passed; else RuntimeError.

    A failing audit stage already fails its task and so the flow; this also stops a promotion when the
    stage is missing from dvc.yaml or its summary says otherwise (nothing leaves without an audit)."""
    summary_file = root / params.paths.metrics / "audit.json"
    if "audit" not in order:
        raise RuntimeError("dvc.yaml has no `audit` stage: a model is promoted only after the leak audit "
                           "passed (stages/audit.py); add it back to dvc.yaml")
    if not summary_file.exists():
        raise RuntimeError(f"{summary_file} is missing: the leak audit did not run; nothing promoted")
    summary = read_json(summary_file)
    if not summary.get("passed"):
        raise RuntimeError(f"the leak audit found {summary.get('hits')} personal-data hit(s) "
                           f"({summary_file}); nothing promoted")
    return summary


# --------------------------------------------------------------------------- tasks
@task(name="dvc-repro", task_run_name="dvc repro {stage}")
def repro_stage(repo: str, stage: str) -> dict:
    """`dvc repro --single-item <stage>`: runs the stage when its inputs changed, else skips it.

    `snapshot` reads state DVC cannot see (the feedback store, the registry), so the flow forces it:
    a retraining always takes a fresh snapshot, while a plain `dvc repro` at the command line stays
    a no-op until the user asks for one (`dvc repro -f -s snapshot`). Same bytes for the same state,
    so the stages after it rerun only when feedback arrived or production changed."""
    log = get_run_logger()
    start = time.monotonic()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if stage == "snapshot" else [])
    proc = subprocess.Popen(cmd, cwd=repo, env=_env(),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            bufsize=1)  # nosec B603 # this python's dvc; `stage` is a dvc.yaml stage name
    lines = []
    assert proc.stdout is not None  # nosec B101 # type narrowing only: stdout=PIPE above
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            lines.append(line)
            log.info("%s | %s", stage, line)
    rc = proc.wait()
    seconds = round(time.monotonic() - start, 1)
    if rc:
        tail = "\n".join(lines[-30:])
        raise RuntimeError(f"dvc repro {stage} failed (exit {rc}) after {seconds} s in {repo}:\n{tail}")
    skipped = any("didn't change, skipping" in x or "is cached - skipping" in x for x in lines)
    log.info("stage %s %s in %.1f s", stage, "up to date" if skipped else "ran", seconds)
    return {"stage": stage, "ran": not skipped, "seconds": seconds}


@task(name="promote")
def promote(repo: str, gate: dict, params: Params) -> dict:
    """Copy the gated candidate into a new registry version and point production at it
    (params: the flow's, read once by `retrain`)."""
    log = get_run_logger()
    root = Path(repo)
    paths = params.paths
    models = root / paths.models
    sha = tree_sha256(models / "finetuned")
    if sha != gate["candidate"]["sha256"]:
        raise RuntimeError(f"{models / 'finetuned'} changed after the gate judged it (sha256 {sha[:12]} != "
                           f"{gate['candidate']['sha256'][:12]}); rerun the flow")
    registry = Registry(root / paths.registry)
    train_ids = set(read_parquet(root / paths.splits / "train.parquet")["id"])
    if gate["candidate"].get("init_from") == "production" and gate.get("production"):
        train_ids |= registry.train_ids(gate["production"]["version"])
    record = {
        **git_state(root),
        "dvc_lock_sha256": _lock_sha256(root),
        "finetuned_sha256": sha,
        "metrics": {"test": gate["candidate"]["test"], "regression": gate["candidate"].get("regression"),
                    "feedback": gate["candidate"].get("feedback")},
        "evaluate": _headline(root / paths.metrics / "evaluate.json"),
        "decision": gate["decision"]["summary"],
        "replaces": (gate.get("production") or {}).get("version"),
    }
    test = read_parquet(root / paths.splits / "test.parquet")
    # lineage travels with the version even if never committed: how it was made and how it trained
    lineage = [root / "dvc.lock", root / "params.yaml", root / paths.metrics / "train.json",
               root / paths.plots / "train_steps.tsv", root / paths.plots / "train_val.tsv"]
    rec = registry.promote(models, train_ids=train_ids, record=record, test=test,
                           regression_rows=params.gate.regression_rows, seed=params.base.seed,
                           keep=params.retrain.keep_versions, extra={f"lineage/{f.name}": f for f in lineage})
    log.info("promoted %s (replaces %s): git %s%s, dvc.lock sha256 %s", rec["version"], record["replaces"] or "nothing",
             (record["git_commit"] or "none")[:12], " (dirty)" if record["git_dirty"] else "",
             (record["dvc_lock_sha256"] or "none")[:12])
    return rec


@task(name="dvc-push", retries=2, retry_delay_seconds=10)
def push(repo: str) -> bool:
    """`dvc push` when a remote is configured; False (and a log line) when there is none."""
    log = get_run_logger()
    remotes = _dvc(Path(repo), "remote", "list")
    if remotes.returncode or not remotes.stdout.strip():
        log.info("no DVC remote configured: skipping dvc push (add one with `dvc remote add -d`)")
        return False
    r = _dvc(Path(repo), "push")
    if r.returncode:
        raise RuntimeError(f"dvc push failed:\n{r.stdout[-3000:]}")
    log.info("dvc push: %s", r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "done")
    return True


@task(name="publish")
def publish(report: Path, gate: dict | None, promoted: dict | None, stages: list[dict]) -> str:
    """The run's summary as a Prefect markdown artifact (key `tuneline-retrain`); `report` is report.md."""
    md = summary_markdown(gate, promoted, stages, Path(report))
    create_markdown_artifact(md, key="tuneline-retrain", description="tuneline retraining: gate decision and report")
    return md


def _headline(path: Path) -> dict | None:
    return read_json(path).get("headline") if path.exists() else None


def _fmt(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, float) else ("-" if x is None else str(x))


def summary_markdown(gate: dict | None, promoted: dict | None, stages: list[dict], report: Path) -> str:
    lines = ["# tuneline retraining", ""]
    if gate is None:
        lines += ["**No gate decision**: the pipeline has no gate stage (reports/metrics/gate.json is missing).", ""]
    else:
        d = gate["decision"]
        verdict = (f"PROMOTED as {promoted['version']}" if promoted
                   else "REJECTED" if not d["promote"] else "not promoted")
        lines += [f"**Candidate {verdict}.** {d['summary']}", "", "| check | passed | detail |", "|---|---|---|"]
        lines += [f"| {c['name']} | {'yes' if c['passed'] else 'NO'} | {c['detail']} |" for c in d["checks"]]
        lines += ["", "| model | data | rows | accuracy | macro_f1 | ece | nll |", "|---|---|---|---|---|---|---|"]
        for who in ("candidate", "production"):
            s = gate.get(who)
            if not s:
                continue
            name = who if who == "candidate" else f"production {s.get('version')}"
            for part, label in (("test", "test split (current)"), ("regression", "regression set (old data)"),
                                ("feedback", "feedback rows (new data)")):
                m = s.get(part)
                if m:
                    values = " | ".join(_fmt(m.get(k)) for k in ("accuracy", "macro_f1", "ece", "nll"))
                    lines.append(f"| {name} | {label} | {m['n']} | {values} |")
        lines += ["", "Rows: " + ", ".join(f"{k} {v}" for k, v in gate.get("rows", {}).items()), ""]
    lines += ["| stage | ran | seconds |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {'yes' if s['ran'] else 'up to date'} | {s['seconds']} |" for s in stages]
    if report.exists():
        lines += ["", "---", "", report.read_text(encoding="utf-8")]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- flow
@flow(name=FLOW_NAME, log_prints=True)
def retrain(repo: str = ".") -> dict:
    """Run the pipeline through DVC, gate the candidate, promote it if it is better."""
    log = get_run_logger()
    root = Path(repo).resolve()
    params: Params = load_params(root / "params.yaml")
    order = stage_order(root)
    log.info("pipeline: %s", " -> ".join(order))
    stage = repro_stage.with_options(retries=params.retrain.retries, retry_delay_seconds=params.retrain.retry_delay_s)
    ran = [stage(str(root), s) for s in order]

    gate_file = root / params.paths.metrics / "gate.json"
    gate = read_json(gate_file) if "gate" in order and gate_file.exists() else None
    registry = Registry(root / params.paths.registry)
    promoted = None
    if gate is None:
        log.warning("no gate decision (no `gate` stage in dvc.yaml): nothing is promoted")
    elif gate["decision"]["promote"]:
        require_audit(root, params, order)
        promoted = promote(str(root), gate, params)
        if params.retrain.push:
            push(str(root))
    else:
        log.warning("candidate rejected, production stays %s: %s",
                    (gate.get("production") or {}).get("version") or "empty", "; ".join(gate["decision"]["reasons"]))
    if gate is not None:
        registry.log_decision({"promoted": promoted["version"] if promoted else None,
                               "production": (gate.get("production") or {}).get("version"),
                               "decision": gate["decision"], "candidate": gate["candidate"],
                               **git_state(root), "dvc_lock_sha256": _lock_sha256(root)})
    publish(root / params.paths.reports / "report.md", gate, promoted, ran)
    production = registry.production()
    return {"stages": ran, "decision": gate["decision"] if gate else None,
            "promoted": promoted["version"] if promoted else None,
            "production": production["version"] if production else None}


# --------------------------------------------------------------------------- CLI
def scheduled_deployment(repo: str, p: RetrainParams):
    """The flow as a deployment on the cron schedule of params.yaml (retrain.cron, retrain.timezone),
    one run at a time."""
    from prefect.schedules import Cron

    return retrain.to_deployment(name=DEPLOYMENT_NAME, schedules=[Cron(p.cron, timezone=p.timezone)],
                                 parameters={"repo": str(Path(repo).resolve())}, concurrency_limit=1,
                                 description=f"tuneline retraining, cron {p.cron!r} ({p.timezone})")


LOCAL_SERVER = "http://127.0.0.1:4200/api"


def _healthy(api_url: str) -> bool:
    import urllib.request

    if not api_url.startswith(("http://", "https://")):  # PREFECT_API_URL: no file:// or custom schemes
        return False
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:  # nosec B310 # http(s) only, checked above
            return r.status == 200
    except OSError:
        return False


def serve_schedule(repo: str, p: RetrainParams) -> None:
    """Serve the scheduled deployment (schedule and retries from `p`, read by main()) until stopped;
    runs execute in this process.

    Schedules need a real Prefect server: the temporary one Prefect starts when PREFECT_API_URL is
    unset does not run the scheduler service, so no run would ever be created. Without
    PREFECT_API_URL this starts `prefect server start` on 127.0.0.1:4200 (or uses one already
    there; its UI shows the runs) and stops it on exit.
    """
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        serve(scheduled_deployment(repo, p))
        return
    server = None
    if not _healthy(LOCAL_SERVER):
        print(f"PREFECT_API_URL is not set: starting a local Prefect server ({LOCAL_SERVER.removesuffix('/api')}) "
              "for the schedule; stop both with Ctrl-C", flush=True)
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                                   "--host", "127.0.0.1", "--port", "4200"], env=env)  # nosec B603 # venv's prefect
        deadline = time.monotonic() + 180
        while not _healthy(LOCAL_SERVER):
            if server.poll() is not None or time.monotonic() > deadline:
                server.terminate()
                raise RuntimeError("the local Prefect server did not start; run `prefect server start` yourself "
                                   "and set PREFECT_API_URL")
            time.sleep(1)
    def stop(signum, frame):  # SIGTERM (a service manager) stops like Ctrl-C, so the server is stopped too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        with temporary_settings({PREFECT_API_URL: LOCAL_SERVER}):
            serve(scheduled_deployment(repo, p))
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m flows.retrain run [REPO]        one retraining now\n"
             "       python -m flows.retrain serve [REPO]      serve the flow on the cron schedule in params.yaml\n"
             "       python -m flows.retrain rollback VERSION  point production at an earlier registry version")
    if len(argv) == 2 and argv[0] == "rollback":
        from tuneline.deploy.registry import RegistryError

        p = load_params("params.yaml")
        try:
            rec = Registry(p.paths.registry).set_production(argv[1])
        except RegistryError as e:
            print(f"rollback: {e}", file=sys.stderr)
            return 1
        print(f"production is now {rec['version']} (git {rec.get('git_commit') or 'unknown'}); "
              "POST /reload on the API to serve it")
        return 0
    if not argv or argv[0] not in ("run", "serve") or len(argv) > 2:
        print(usage, file=sys.stderr)
        return 2
    repo = argv[1] if len(argv) == 2 else "."
    if argv[0] == "serve":
        serve_schedule(repo, load_params(Path(repo) / "params.yaml").retrain)
        return 0
    result = retrain(repo=repo)
    print(f"production: {result['production'] or 'none'}; this run: "
          f"{'promoted ' + result['promoted'] if result['promoted'] else 'no promotion'}"
          + (f" ({result['decision']['summary']})" if result["decision"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
