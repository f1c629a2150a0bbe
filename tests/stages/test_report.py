"""The report stage, on the real outputs of the tiny end-to-end pipeline (conftest `tiny_pipeline`: one
`dvc repro` of the whole DAG per session), so a key renamed upstream fails here.

- the report the pipeline's own `dvc repro` wrote: every section, each with the numbers of the
  upstream files it reads; the Markdown twin; self-contained HTML rendered in headless Chromium
  (screenshot, DOM, and a NetLog proving the page requests nothing);
- the model card names the data, the metrics, the calibration and the limits;
- the comparison with a previous run (a baseline file, or git HEAD), regressions flagged;
- a missing upstream file: evaluate.json is an error, any other a red "Not available" in its section;
- dvc.yaml declares exactly the files the report reads.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_pipeline import make_paths

from stages.report import ReportError, run
from tuneline.evaluate.document import fmt
from tuneline.evaluate.report import INPUTS, Inputs, mistakes_section
from tuneline.params import ReportParams, load_params
from tuneline.data.records import read_json, write_json

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["summary", "gate", "data", "training", "metrics", "calibration", "confusion", "slices", "mistakes",
            "compression", "comparison"]
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


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def real(tiny_pipeline) -> Path:
    """reports/ and the model card as the tiny pipeline's `dvc repro` left them (report stage included)."""
    return tiny_pipeline.outputs


def upstream(root: Path, rel: str):
    return read_json(root / "reports" / rel)


def copy_outputs(real: Path, dst: Path):
    """The pipeline's outputs in a folder of our own (not a git repository), to rerun the report on."""
    shutil.copytree(real / "reports", dst / "reports")
    (dst / "models/calibrated").mkdir(parents=True)
    return make_paths(dst)


def report_params(real: Path, **kw) -> tuple[ReportParams, object]:
    params = load_params(real / "params.yaml")
    return params.report.model_copy(update=kw), params.classification


def sections(page: str) -> dict[str, str]:
    """id -> the section's visible text (tags stripped, entities decoded, whitespace folded)."""
    out = {}
    for sid, body in re.findall(r'<section id="([^"]+)">(.*?)</section>', page, flags=re.S):
        text = re.sub(r"<[^>]+>", " ", body)
        out[sid] = " ".join(htmllib.unescape(text).split())
    return out


def assert_in(section: str, text: str, *expected) -> None:
    missing = [str(e) for e in expected if str(e) not in text]
    assert not missing, f"section {section!r} lacks {missing}:\n{text[:3000]}"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("Debian's chromium is needed to render the report: apt-get install -y chromium")
    return exe


def run_chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="tuneline-chromium-") as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


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


# --------------------------------------------------------------------------- the pipeline's own report
def test_every_section_carries_the_numbers_of_the_files_it_reads(real):
    page = (real / "reports/index.html").read_text()
    text = sections(page)
    assert list(text) == SECTIONS
    assert "Not available" not in page  # every upstream stage ran
    ev, cal = upstream(real, "metrics/evaluate.json"), upstream(real, "metrics/calibrate.json")

    assert_in("summary", text["summary"], *(fmt(v) for v in ev["headline"].values()),
              f"Test split: {ev['rows']:,} rows", "No previous run to compare with")  # nothing committed at HEAD
    gate = upstream(real, "metrics/gate.json")
    assert_in("gate", text["gate"], gate["decision"]["summary"], *(c["detail"] for c in gate["decision"]["checks"]),
              f"test split (current data) {gate['candidate']['test']['n']}")

    collect, clean = upstream(real, "metrics/collect.json"), upstream(real, "metrics/clean.json")
    validation, split = upstream(real, "metrics/validation.json"), upstream(real, "metrics/split.json")
    assert_in("data", text["data"], f"rows read {fmt(collect['rows_read'])}",
              *(f"{name} {v['source']} {fmt(v['rows_read'])}" for name, v in collect["sources"].items()),
              f"rows_with_pii {fmt(clean['pii']['rows_with_pii'])}",
              *(f"by_entity / {k} {fmt(v)}" for k, v in clean["pii"]["by_entity"].items()),
              f"{validation['expectations']['passed']} of {validation['expectations']['evaluated']} expectations met "
              f"on {validation['rows']:,} rows", *(c["name"] for c in validation["checks"]),
              *(f"{name} {fmt(v['rows'])} {fmt(v['fraction'])}" for name, v in split["splits"].items()))
    assert clean["pii"]["by_entity"], "the tiny data has personal data in it"

    train = upstream(real, "metrics/train.json")
    assert_in("training", text["training"], f"method {train['method']}", f"steps {fmt(train['steps'])}",
              f"trainable parameters {fmt(train['trainable_params'])}", f"accuracy {fmt(train['val']['accuracy'])}")
    assert_in("metrics", text["metrics"], *(f"{lab} {fmt(v['precision'])} {fmt(v['recall'])} {fmt(v['f1'])} "
                                            f"{fmt(v['support'])}" for lab, v in ev["per_class"].items()),
              f"weighted F1 {fmt(ev['weighted_f1'])}", f"[{ev['ci']['accuracy']['low']:.4f}")
    assert_in("calibration", text["calibration"], f"T = {cal['temperature']:.4f}",
              f"ECE (15 bins) {fmt(cal['before']['ece'])} {fmt(cal['after']['ece'])} "
              f"{fmt(ev['calibration']['uncalibrated']['ece'])} {fmt(ev['calibration']['calibrated']['ece'])}")
    pairs = pd.read_csv(real / "reports/plots/evaluate/confusion.csv").value_counts()
    counts = [" ".join([lab, *(str(pairs.get((lab, p), 0)) for p in ev["labels"])]) for lab in ev["labels"]]
    assert_in("confusion", text["confusion"], *counts)
    assert_in("slices", text["slices"], *(f"{value} {m['rows']} {fmt(m['accuracy'])}"
                                          for group in ev["slices"].values() for value, m in group.items()))
    mistakes = upstream(real, "mistakes.json")
    assert mistakes, "the tiny model makes mistakes"
    assert_in("mistakes", text["mistakes"], *(f"{fmt(m['confidence'])} {m['label']} {m['predicted']} {m['source']} "
                                              f"{m['id']}" for m in mistakes))
    compress = upstream(real, "metrics/compress.json")
    assert_in("compression", text["compression"],
              *(f"{r['name']} {r['kind']}" for r in [compress["teacher"], *compress["variants"]]),
              f"teacher teacher – {fmt(compress['teacher']['macro_f1'])}",
              *(f"{t['variant']} {t['kind']} {t['condition']} {t['metric']}" for t in compress["targets"]))
    assert_in("comparison", text["comparison"], "No previous run")
    # every figure, embedded
    for alt in ("Loss per optimizer step", "Validation accuracy and macro F1", "ROC and precision-recall",
                "Reliability diagram on the test split", "Reliability diagram on the val split",
                "Rows: true class", "Each point is one variant"):
        assert re.search(rf'<img alt="{re.escape(alt)}[^"]*" src="data:image/png;base64,', page), alt


def test_markdown_twin_and_its_figures(real):
    md = (real / "reports/report.md").read_text()
    for heading in ("Summary", "Promotion gate", "Data", "Training", "Test metrics", "Calibration",
                    "Confusion matrix", "Slices", "Most confident mistakes", "Compression",
                    "Comparison with the previous run"):
        assert f"\n## {heading}\n" in md, heading
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert len(links) == 7
    for link in links:
        assert (real / "reports" / link).is_file(), link
    # the compress stage's own chart, not a redrawing
    assert (real / "reports/figures/compression.png").read_bytes() == (
        real / "reports/plots/compress/tradeoff.png").read_bytes()


def test_html_is_self_contained(real):
    page = (real / "reports/index.html").read_text()
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page) + re.findall(r"url\(([^)]*)\)", page)
    assert refs, "expected figures and navigation links"
    external = [r for r in refs if not r.startswith(("data:image/png;base64,", "#"))]
    assert not external, external
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", page)
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 7


def test_model_card_names_data_metrics_calibration_and_limits(real):
    card = (real / "models/calibrated/README.md").read_text()
    ev, collect = upstream(real, "metrics/evaluate.json"), upstream(real, "metrics/collect.json")
    split, train = upstream(real, "metrics/split.json"), upstream(real, "metrics/train.json")
    for heading in ("## Model", "## Intended use", "## Data", "## Evaluation (test split, calibrated)",
                    "## Limitations"):
        assert f"\n{heading}\n" in card, heading
    kept = [name for name, v in collect["sources"].items() if v["rows_kept"]]
    assert f"- {collect['rows_out']:,} records collected from: {', '.join(kept)}." in card
    assert "- Splits: " + ", ".join(f"{k} {v['rows']:,}" for k, v in split["splits"].items()) in card
    assert f"({train['trainable_params']:,} of {train['total_params']:,} parameters trained)" in card
    for key, value in ev["headline"].items():
        assert re.search(rf"\| [^|]+ \| {re.escape(fmt(value))} \| \[", card), key
    m, c = ev["model"], ev["calibration"]
    assert f"- Calibration: {m['calibration']} scaling (T = {m['temperature']:.4f}), fitted on the validation" in card
    assert (f"ECE {fmt(c['uncalibrated']['ece'])} before, {fmt(c['calibrated']['ece'])} after; "
            f"NLL {fmt(c['uncalibrated']['nll'])} before, {fmt(c['calibrated']['nll'])} after.") in card
    low = ev["ci"]["accuracy"]["low"]
    weak = [f"{g} = {v} (accuracy {s['accuracy']:.3f}" for g, vs in ev["slices"].items() for v, s in vs.items()
            if not s["small"] and s["accuracy"] < low]
    line = next(x for x in card.splitlines() if x.startswith("- Weaker slices: "))
    assert all(w in line for w in weak) and (weak or "none below the overall accuracy interval" in line), line


def test_renders_in_headless_chromium_without_requesting_anything(real, tmp_path):
    page = real / "reports/index.html"
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
    assert dom.count("<img alt=") == 7 and "Most confident mistakes" in dom
    ev = upstream(real, "metrics/evaluate.json")
    assert f"<td class=\"num\">{fmt(ev['headline']['macro_f1'])}</td>" in dom
    assert page_requests(netlog) == []

    # the detector works: a page that does reference the network shows up in the same kind of log
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://tuneline.invalid/probe.png"></body></html>')
    control_log = tmp_path / "control-netlog.json"
    r = run_chromium("--dump-dom", "--virtual-time-budget=3000", f"--log-net-log={control_log}", control.as_uri())
    assert "http://tuneline.invalid/probe.png" in page_requests(control_log)


# --------------------------------------------------------------------------- against a previous run
def test_regressions_against_a_baseline_file_are_flagged(real, tmp_path):
    paths = copy_outputs(real, tmp_path / "run")
    baseline = upstream(real, "metrics/evaluate.json")
    baseline["headline"]["accuracy"] += 0.05  # the previous model was more accurate: a regression
    baseline["headline"]["ece"] += 0.05  # ... and worse calibrated: an improvement
    write_json(baseline, tmp_path / "baseline.json")
    p, base = report_params(real, baseline=str(tmp_path / "baseline.json"))
    out = run(p, base, paths)
    assert out["regressions"] == ["accuracy"] and out["missing"] == []
    page = (tmp_path / "run/reports/index.html").read_text()
    text = sections(page)
    assert_in("summary", text["summary"], "Regressions against the previous run (baseline file", "): accuracy.")
    assert re.search(r'<tr class="bad"><td>accuracy</td>', page)
    assert re.search(r'<tr class="good"><td>ECE \(15 bins\)</td>', page)
    assert_in("comparison", text["comparison"], f"{baseline['headline']['accuracy']:.4f} -0.0500")
    md = (tmp_path / "run/reports/report.md").read_text()
    assert re.search(r"\| accuracy \|.*\| \*\*worse\*\* \|", md)
    card = (tmp_path / "run/models/calibrated/README.md").read_text()
    assert "Against the previous run: regressions in accuracy." in card


def test_compares_with_the_metrics_committed_at_git_head(real, tmp_path):
    root = tmp_path / "run"
    paths = copy_outputs(real, root)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    evaluate_json = root / "reports/metrics/evaluate.json"
    current = evaluate_json.read_text()
    subprocess.run(git + ["init", "-q"], check=True)
    previous = json.loads(current)
    previous["headline"]["macro_f1"] -= 0.1  # the previous run was worse: no regression
    evaluate_json.write_text(json.dumps(previous))
    subprocess.run(git + ["add", "reports/metrics/evaluate.json"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "previous run"], check=True)
    evaluate_json.write_text(current)
    p, base = report_params(real)
    out = run(p, base, paths)
    assert out["baseline"].startswith("git HEAD ") and out["regressions"] == []
    page = (root / "reports/index.html").read_text()
    assert "No regression against the previous run (git HEAD " in page
    assert re.search(r'<tr class="good"><td>macro F1</td>', page)


# --------------------------------------------------------------------------- missing or changed inputs
def test_a_missing_upstream_file_is_marked_in_its_section(real, tmp_path):
    paths = copy_outputs(real, tmp_path / "run")
    metrics = Path(paths.metrics)
    for gone in (metrics / "compress.json", Path(paths.plots) / "compress/tradeoff.png", metrics / "clean.json"):
        gone.unlink()
    p, base = report_params(real)
    out = run(p, base, paths)
    assert out["sections"] == SECTIONS and out["missing"] == ["clean", "compress", "compress_tradeoff"]
    page = (tmp_path / "run/reports/index.html").read_text()
    text = sections(page)
    assert_in("compression", text["compression"], f"Not available: {metrics / 'compress.json'} is missing (run: dvc "
              f"repro compress); {paths.plots}/compress/tradeoff.png is missing (run: dvc repro compress).")
    assert "<table>" not in page.split('<section id="compression">')[1].split("</section>")[0]
    assert_in("data", text["data"], f"Not available: {metrics / 'clean.json'} is missing (run: dvc repro clean).",
              f"rows read {fmt(upstream(real, 'metrics/collect.json')['rows_read'])}")  # the rest is still there
    assert page.count('<div class="callout bad">Not available:') == 2
    assert_in("summary", text["summary"], "Incomplete report: 3 upstream files missing (clean, compress, "
              "compress_tradeoff); each is named in its section.")
    assert not (tmp_path / "run/reports/figures/compression.png").exists()


def test_without_evaluate_metrics_the_report_is_an_error(real, tmp_path):
    paths = copy_outputs(real, tmp_path / "run")
    (Path(paths.metrics) / "evaluate.json").unlink()
    p, base = report_params(real)
    with pytest.raises(ReportError, match=r"evaluate\.json: missing; run the evaluate stage \(dvc repro evaluate\)"):
        run(p, base, paths)


def test_a_renamed_upstream_key_fails_instead_of_rendering_an_empty_table(real, tmp_path):
    paths = copy_outputs(real, tmp_path / "run")
    clean_json = Path(paths.metrics) / "clean.json"
    clean = read_json(clean_json)
    clean["pii"]["entities"] = clean["pii"].pop("by_entity")
    write_json(clean, clean_json)
    p, base = report_params(real)
    with pytest.raises(KeyError, match="by_entity"):
        run(p, base, paths)


def test_no_mistakes_is_said_so():
    [note] = mistakes_section(Inputs({"mistakes": []})).blocks
    assert note.text == "No mistakes on the test split."


def test_dvc_yaml_declares_exactly_the_files_the_report_reads():
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["deps"]
    data = {d for d in deps if d.startswith("${paths.")}
    assert data == {f"${{paths.{where}}}/{rel}" for where, rel, _ in INPUTS.values()}
