"""A stage run from the command line reports an expected user error as one line and exit status 2.

Tracebacks are for bugs: they stay behind TUNELINE_TRACEBACK=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run_collect(tmp_path: Path, data: bytes, **env) -> subprocess.CompletedProcess:
    (tmp_path / "in.csv").write_bytes(data)
    params = {"classification": {"labels": ["ham", "spam"]},
              "paths": {"collected": "c", "rejects": "r", "metrics": "m", "cache": "k", "feedback": "f"},
              "collect": {"feedback": False, "datasets": [
                  {"name": "mine", "source": {"kind": "local", "path": "in.csv"}, "format": "csv"}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "stages.collect"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "in.csv: empty file"),
    (b"text,label\n", "in.csv: header only, no data rows"),
    (b"\xef\xbb\xbfbody,label\r\nhi,ham\r\n", "in.csv: missing column(s) ['text']; columns are ['body', 'label']"),
])
def test_user_error_is_one_line_without_traceback(tmp_path, data, expected):
    r = _run_collect(tmp_path, data)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_traceback_behind_the_debug_switch(tmp_path):
    r = _run_collect(tmp_path, b"text,label\n", TUNELINE_TRACEBACK="1")
    assert r.returncode != 0 and "Traceback" in r.stderr and "CollectError" in r.stderr


def test_bom_crlf_file_collects_from_the_command_line(tmp_path):
    r = _run_collect(tmp_path, "\ufefftext,label\r\nhello,ham\r\nwin cash,spam\r\n".encode())
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c" / "records.parquet").exists()
