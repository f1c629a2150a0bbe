"""The report stage: every section present, self-contained HTML rendered in headless Chromium
(screenshot, DOM, and a NetLog proving the page requests nothing), the Markdown twin, the
model card, and the comparison with a previous run (a baseline file, or git HEAD)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from tiny_pipeline import base_params, build_pipeline, single_thread

from stages import calibrate, evaluate
from stages.report import run
from tuneline.params import CalibrateParams, EvaluateParams, ReportParams
from tuneline.records import read_json, write_json

SECTIONS = [
    "summary",
    "data",
    "training",
    "metrics",
    "calibration",
    "confusion",
    "slices",
    "mistakes",
    "compression",
    "comparison",
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # nothing may leave the machine even if something tried: every request goes to a dead proxy
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
]


def write_train_outputs(paths) -> None:
    """train.json and the curve files in the shapes the train stage writes them."""
    plots, metrics = Path(paths.plots), Path(paths.metrics)
    plots.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "step": range(1, 21),
            "epoch": [i / 10 for i in range(1, 21)],
            "loss": [0.7 * 0.93**i for i in range(20)],
            "lr": [1e-3] * 20,
        }
    ).to_csv(plots / "train_steps.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "step": [10, 20],
            "epoch": [1.0, 2.0],
            "loss": [0.4, 0.3],
            "accuracy": [0.85, 0.9],
            "f1_macro": [0.8, 0.86],
            "f1_ham": [0.9, 0.93],
            "f1_spam": [0.7, 0.79],
        }
    ).to_csv(plots / "train_val.tsv", sep="\t", index=False)
    write_json(
        {
            "method": "full",
            "base": "tiny-bert (test fixture)",
            "device": "cpu",
            "precision": "fp32",
            "val": {"loss": 0.3, "accuracy": 0.9, "f1_macro": 0.86},
            "best_step": 20,
            "steps": 20,
            "epochs_run": 2,
            "stopped_early": False,
            "trainable_params": 40_000,
            "total_params": 40_000,
            "trainable_pct": 100.0,
            "train_seconds": 1.5,
            "samples_per_s": 260.0,
            "train_rows": 200,
            "val_rows": 120,
            "max_length": 64,
        },
        metrics / "train.json",
    )


COMPRESS = {  # the compress stage's layout: teacher, variants, targets, conditions
    "teacher": {
        "name": "teacher",
        "kind": "teacher",
        "macro_f1": 0.89,
        "accuracy": 0.91,
        "size_mb": 90.9,
        "params": 22_700_000,
        "latency_ms_p50": 9.1,
        "latency_ms_p95": 12.0,
        "throughput_b32": 410.0,
    },
    "variants": [
        {
            "name": "int8",
            "kind": "quantize",
            "source": "teacher",
            "macro_f1": 0.88,
            "accuracy": 0.9,
            "size_mb": 23.0,
            "params": 22_700_000,
            "latency_ms_p50": 5.2,
            "latency_ms_p95": 7.3,
            "throughput_b32": 690.0,
            "speedup_vs_teacher": 1.68,
            "size_ratio_vs_teacher": 0.25,
        },
        {"name": "heads", "kind": "prune_heads", "skipped": "the teacher's adapter does not live in its weights"},
    ],
    "targets": [{"variant": "int8", "kind": "quantize", "condition": "F1 drop <= 1 point", "metric": 1.0, "met": True}],
    "conditions": {"shared_machine_note": "timings on a shared CPU are noisy"},
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_model_dir):
    """Everything upstream of report, in a folder of its own (not a git repository)."""
    root = tmp_path_factory.mktemp("report")
    paths = build_pipeline(root, tiny_model_dir)
    write_train_outputs(paths)
    with single_thread():
        calibrate.run(CalibrateParams(), base_params(), paths)
        evaluate.run(EvaluateParams(n_bootstrap=100, n_mistakes=5), CalibrateParams(), base_params(), paths)
    write_json(COMPRESS, Path(paths.metrics) / "compress.json")
    return root, paths


@pytest.fixture(scope="module")
def reported(pipeline, tmp_path_factory):
    """The report against a baseline that was better on accuracy (a regression to flag)."""
    root, paths = pipeline
    baseline = read_json(root / "reports/metrics/evaluate.json")
    baseline["headline"]["accuracy"] += 0.05
    baseline["headline"]["ece"] += 0.05  # the new model is better calibrated: an improvement
    baseline_file = tmp_path_factory.mktemp("baseline") / "evaluate.json"
    write_json(baseline, baseline_file)
    out = run(ReportParams(baseline=str(baseline_file)), base_params(), paths)
    return root, paths, out


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("Debian's chromium is needed to render the report: apt-get install -y chromium")
    return exe


def run_chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="tuneline-chromium-") as profile:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network stack for (Chromium's own background traffic has no page)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for e in log["events"]:
        params = e.get("params") or {}
        if (
            e["type"] == start
            and "url" in params
            and (params.get("initiator") in ("null", "file://") or "file://" in params.get("network_isolation_key", ""))
        ):
            urls.append(params["url"])
    return urls


def test_all_outputs_and_sections(reported):
    root, _, out = reported
    assert out["sections"] == SECTIONS
    html = (root / "reports/index.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    md = (root / "reports/report.md").read_text()
    for heading in (
        "## Summary",
        "## Data",
        "## Training",
        "## Test metrics",
        "## Calibration",
        "## Confusion matrix",
        "## Slices",
        "## Most confident mistakes",
        "## Compression",
        "## Comparison with the previous run",
    ):
        assert heading in md
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", md):
        assert (root / "reports" / link).is_file(), link
    assert {p.name for p in (root / "reports/figures").iterdir()} >= {
        "training_loss.png",
        "training_val.png",
        "curves.png",
        "reliability_test.png",
        "reliability_val.png",
        "confusion.png",
        "compression.png",
    }
    # the data summary carries the upstream numbers; the mistakes are the evaluate stage's
    assert "PHONE_NUMBER" in html and "too_short" in html and "Validation passed" in html
    for m in read_json(root / "reports/mistakes.json"):
        assert m["id"] in html


def test_html_is_self_contained(reported):
    root, _, _ = reported
    html = (root / "reports/index.html").read_text()
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html) + re.findall(r"url\(([^)]*)\)", html)
    assert refs, "expected figures and navigation links"
    external = [r for r in refs if not r.startswith(("data:image/png;base64,", "#"))]
    assert not external, external
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", html)
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 7


def test_renders_in_headless_chromium_without_requesting_anything(reported, tmp_path):
    root, _, _ = reported
    page = root / "reports/index.html"
    shot = tmp_path / "report.png"
    r = run_chromium("--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real rendering, not a blank page

    # the DOM after rendering, and a NetLog of every request. The page's Content-Security-Policy would
    # block external loads anyway, so load a copy without it: the content itself must ask for nothing.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text()))
    netlog = tmp_path / "netlog.json"
    r = run_chromium("--dump-dom", "--virtual-time-budget=3000", f"--log-net-log={netlog}", bare.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    for sid in SECTIONS:
        assert re.search(rf'<section id="{sid}">\s*<h2>', dom), sid
    assert dom.count("<img alt=") >= 7 and "Most confident mistakes" in dom
    assert page_requests(netlog) == []

    # the detector works: a page that does reference the network shows up in the same kind of log
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://tuneline.invalid/probe.png"></body></html>')
    control_log = tmp_path / "control-netlog.json"
    r = run_chromium("--dump-dom", "--virtual-time-budget=3000", f"--log-net-log={control_log}", control.as_uri())
    assert "http://tuneline.invalid/probe.png" in page_requests(control_log)


def test_regressions_against_a_baseline_file_are_flagged(reported):
    root, _, out = reported
    assert out["regressions"] == ["accuracy"]
    html = (root / "reports/index.html").read_text()
    assert "Regressions against the previous run" in html
    assert re.search(r'<tr class="bad"><td>accuracy</td>', html)
    assert re.search(r'<tr class="good"><td>ECE \(15 bins\)</td>', html)
    md = (root / "reports/report.md").read_text()
    assert "| accuracy |" in md and "**worse**" in md


def test_model_card(reported):
    root, _, _ = reported
    card = (root / "models/calibrated/README.md").read_text()
    ev = read_json(root / "reports/metrics/evaluate.json")
    for part in ("## Intended use", "## Data", "## Evaluation", "## Limitations", "ham, spam", "temperature"):
        assert part in card
    assert f"{ev['headline']['macro_f1']:.4f}" in card
    assert "regressions in accuracy" in card


def test_compares_with_the_metrics_committed_at_git_head(pipeline):
    root, paths = pipeline
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    evaluate_json = root / "reports/metrics/evaluate.json"
    current = evaluate_json.read_text()
    try:
        subprocess.run(git + ["init", "-q"], check=True)
        previous = json.loads(current)
        previous["headline"]["macro_f1"] -= 0.1  # the previous run was worse: no regression
        evaluate_json.write_text(json.dumps(previous))
        subprocess.run(git + ["add", "reports/metrics/evaluate.json"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "previous run"], check=True)
        evaluate_json.write_text(current)
        out = run(ReportParams(), base_params(), paths)
        assert out["baseline"].startswith("git HEAD ") and out["regressions"] == []
        html = (root / "reports/index.html").read_text()
        assert "No regression against the previous run" in html
        assert re.search(r'<tr class="good"><td>macro F1</td>', html)
    finally:
        shutil.rmtree(root / ".git", ignore_errors=True)
        evaluate_json.write_text(current)


def test_without_a_previous_run_or_compression(pipeline):
    root, paths = pipeline
    (Path(paths.metrics) / "compress.json").rename(root / "compress.json")
    try:
        out = run(ReportParams(), base_params(), paths)
    finally:
        (root / "compress.json").rename(Path(paths.metrics) / "compress.json")
    assert "compression" not in out["sections"] and out["regressions"] == []
    assert "first run" in out["baseline"]
    html = (root / "reports/index.html").read_text()
    assert "No previous run" in html
    assert not (root / "reports/figures/compression.png").exists()  # stale figures are removed
