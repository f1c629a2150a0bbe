"""audit stage: passes on what the pipeline writes after clean; a value planted after clean stops it,
named by file, row id and detector, and the value appears neither in the message nor in audit.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import audit
from tests.stages.tiny_pipeline import make_paths, write_splits
from tuneline.data.audit import make_canaries
from tuneline.errors import UserError
from tuneline.params import AuditParams
from tuneline.data.records import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[2]
P = AuditParams()
PHONE = "Help08712402972"  # glued, the shape presidio missed in the SMS data (made-up number)
EMAIL = "jane.doe@example.com"


def build(root: Path):
    """Splits (with <PHONE_NUMBER> placeholders), every stage's metrics, mistakes, reports and a model card."""
    paths = make_paths(root)
    splits = write_splits(paths)
    m = Path(paths.metrics)  # filler metrics to scan (the e2e test audits the tiny pipeline's real ones)
    for name in ("collect", "clean", "validation", "split", "snapshot", "train", "calibrate", "evaluate", "gate", "compress"):
        write_json({"stage": name, "seconds": 1.5, "version": "2.13.0", "sha256": "ab" * 32}, m / f"{name}.json")
    test = splits["test"]
    mistakes = [{"id": i, "label": "ham", "predicted": "spam", "confidence": 0.97, "text": t}
                for i, t in zip(test["id"][:3], test["text"][:3])]
    reports = Path(paths.reports)
    write_json(mistakes, reports / "mistakes.json")
    write_text("<!DOCTYPE html><html><body><p>all <b>passed</b> on 2026-12-03 23:25</p></body></html>\n",
               reports / "validation.html")
    write_text('<html><body><img src="data:image/png;base64,iVBORw0KGgo0871240297212345"><table>'
               + "".join(f"<tr><td>{r['id']}</td><td>{r['text']}</td></tr>" for r in mistakes)
               + "</table></body></html>\n", reports / "index.html")
    write_text("# report\n\n| accuracy | 0.9856 |\n", reports / "report.md")
    write_text("# Calibrated text classifier\n\n- 4,522 records; T = 1.2359\n- Personal data was replaced.\n",
               Path(paths.models) / "calibrated" / "README.md")
    return paths, splits


def test_passes_on_what_the_pipeline_writes(tmp_path):
    paths, splits = build(tmp_path)
    out = audit.run(P, paths)
    saved = read_json(Path(paths.metrics) / "audit.json")
    assert out["passed"] is saved["passed"] is True and saved["hits"] == 0
    assert saved["hits_per_detector"] == {d: 0 for d in P.detectors}
    assert saved["rows_scanned"] == sum(len(df) for df in splits.values())
    scanned = {Path(f["path"]).relative_to(tmp_path).as_posix() for f in saved["files"]}
    assert {"data/splits/train.parquet", "data/splits/val.parquet", "data/splits/test.parquet",
            "reports/mistakes.json", "reports/index.html", "reports/report.md", "reports/validation.html",
            "models/calibrated/README.md", "reports/metrics/clean.json", "reports/metrics/gate.json"} <= scanned
    assert "reports/metrics/audit.json" not in scanned and saved["files_scanned"] == len(scanned) == 18


@pytest.mark.parametrize("where", ["split", "model_card", "mistakes"])
def test_value_planted_after_clean_fails_naming_file_row_and_detector(tmp_path, where):
    paths, splits = build(tmp_path)
    if where == "split":
        df = splits["train"].copy()
        df.loc[17, "text"] = f"{df.loc[17, 'text']} {PHONE}"
        df.to_parquet(Path(paths.splits) / "train.parquet", index=False)
        file, locator, detector, value = "data/splits/train.parquet", f"id={df.loc[17, 'id']} (column text)", \
            "phone", PHONE
    elif where == "model_card":
        card = Path(paths.models) / "calibrated" / "README.md"
        card.write_text(card.read_text() + f"- Contact: {EMAIL}\n")
        file, locator, detector, value = "models/calibrated/README.md", "line 5", "email", EMAIL
    else:
        mistakes = read_json(Path(paths.reports) / "mistakes.json")
        card_no = make_canaries(3, seed=1)[2].value  # a Luhn-valid card number
        mistakes[1]["text"] += f" card {card_no}"
        write_json(mistakes, Path(paths.reports) / "mistakes.json")
        file, locator, detector, value = "reports/mistakes.json", f"$[1].text (id={mistakes[1]['id']})", \
            "credit_card", card_no
    with pytest.raises(audit.LeakFound) as err:
        audit.run(P, paths)
    msg = str(err.value)
    assert f"{tmp_path / file}: {locator}" in msg and f"{locator}: {detector}" in msg
    assert "1 personal-data hit(s) in 1 of 18 files" in msg
    saved = (Path(paths.metrics) / "audit.json").read_text()
    summary = json.loads(saved)
    assert summary["passed"] is False and summary["hits_per_detector"][detector] == 1 and summary["hits"] == 1
    assert summary["findings"] == [{"file": str(tmp_path / file), "where": locator, "detector": detector}]
    assert value not in msg and value not in saved


def test_allow_list_lets_a_known_value_through(tmp_path):
    paths, splits = build(tmp_path)
    card = Path(paths.models) / "calibrated" / "README.md"
    card.write_text(card.read_text() + "- Support: support@tuneline.example\n")
    with pytest.raises(audit.LeakFound):
        audit.run(P, paths)
    assert audit.run(AuditParams(allow=[r"support@tuneline\.example"]), paths)["passed"] is True


def test_missing_splits_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no split files"):
        audit.run(P, make_paths(tmp_path))


def test_command_line_exits_nonzero_with_one_clear_error(tmp_path):
    """`python -m stages.audit` (what dvc runs): exit 2, an `error:` line naming file, id, detector; no traceback."""
    paths, splits = build(tmp_path)
    df = splits["val"].copy()
    df.loc[3, "text"] = f"mail {EMAIL} now"
    df.to_parquet(Path(paths.splits) / "val.parquet", index=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"] = json.loads(paths.model_dump_json())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "stages.audit"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: audit: 1 personal-data hit"))
    assert error and f"val.parquet: id={df.loc[3, 'id']} (column text): email" in proc.stderr
    assert EMAIL not in proc.stdout + proc.stderr
