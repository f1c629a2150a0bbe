"""The previous run to compare with, and the comparison.

The baseline is an evaluate stage output (`evaluate.json`): a file named in `report.baseline`, or
the one committed at git HEAD (the previous run, when each run you want to compare against is
committed). A baseline may come from an older version of the pipeline, so a metric it lacks is
left out of the comparison rather than failing it.
"""

from __future__ import annotations

import json
import subprocess  # nosec B404 # read-only git with a fixed argument list, no shell
from pathlib import Path

from tuneline.evaluate.metrics import LOWER_IS_BETTER
from tuneline.data.records import read_json


class BaselineError(ValueError):
    pass


def git_baseline(path: Path) -> tuple[dict | None, str]:
    """The version of `path` committed at git HEAD, and a description of where it came from."""
    path = Path(path).resolve()

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(path.parent), *args], capture_output=True, text=True, timeout=30,
                              check=False)  # nosec B603 B607 # the user's git from PATH, read-only args

    try:
        show, rev = git("show", f"HEAD:./{path.name}"), git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"git not available ({e})"
    if show.returncode != 0:
        return None, "no evaluate metrics committed at git HEAD (first run, or not a git repository)"
    try:
        return json.loads(show.stdout), f"git HEAD {rev.stdout.strip()}"
    except json.JSONDecodeError:
        return None, f"the evaluate.json at git HEAD {rev.stdout.strip()} is not valid JSON"


def load_baseline(baseline: str | None, evaluate_path: Path) -> tuple[dict | None, str]:
    """`baseline` (report.baseline): a path to an evaluate.json, or None for the one at git HEAD."""
    if baseline:
        path = Path(baseline)
        if not path.exists():
            raise BaselineError(f"report.baseline: {path} does not exist; set it to an evaluate.json or null "
                                "(null compares with the one committed at git HEAD)")
        return read_json(path), f"baseline file {path}"
    return git_baseline(evaluate_path)


def worse_by(metric: str, delta: float) -> float:
    """How much worse a change is (positive = worse), whatever the metric's direction."""
    return delta if metric in LOWER_IS_BETTER else -delta


def compare(current: dict, baseline: dict, tolerance: float) -> list[dict]:
    """Headline and per-class F1 changes against the baseline, one row each: key (`accuracy`, ...,
    or `f1:<label>`), current, baseline, delta, regression, worse, improvement, outside_ci.

    A headline metric worse by more than `tolerance` is a regression; a class F1 worse by that much
    is only `worse` (small classes are noisy). `outside_ci`: the baseline value lies outside this
    run's confidence interval (None for per-class rows, which have none)."""
    rows = []
    base_h = baseline.get("headline") or {}
    for key, value in current["headline"].items():
        old = base_h.get(key)
        if old is None or value is None:
            continue
        delta = value - old
        ci = current["ci"].get(key)
        worse = worse_by(key, delta)
        rows.append({"key": key, "current": value, "baseline": old, "delta": delta, "regression": worse > tolerance,
                     "worse": worse > tolerance, "improvement": worse < -tolerance,
                     "outside_ci": bool(ci and not ci["low"] <= old <= ci["high"])})
    base_pc = baseline.get("per_class") or {}
    for label, pc in current["per_class"].items():
        old = (base_pc.get(label) or {}).get("f1")
        if old is None:
            continue
        delta = pc["f1"] - old
        rows.append({"key": f"f1:{label}", "current": pc["f1"], "baseline": old, "delta": delta, "regression": False,
                     "worse": -delta > tolerance, "improvement": delta > tolerance, "outside_ci": None})
    return rows
