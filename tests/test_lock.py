"""requirements.lock (tools/lock.py, `make lock`) covers pyproject.toml and hashes every file.

`make setup` installs the lock with `--require-hashes --no-deps`: a dependency added to
pyproject.toml but not to the lock would be missing from every fresh install, so this fails first
and says to run `make lock`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


def _lock() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    entries = ENTRY.findall(text)
    pinned = [line for line in text.splitlines() if "==" in line]
    assert len(entries) == len(pinned), "every line `name==version` must be followed by one --hash=sha256: line"
    return {canonicalize_name(n): v for n, v, _ in entries}


def test_the_lock_pins_every_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["test"],
                *project["build-system"]["requires"]]
    lock = _lock()
    wrong = []
    for spec in map(Requirement, declared):
        version = lock.get(canonicalize_name(spec.name))
        if version is None or not spec.specifier.contains(version, prereleases=True):
            wrong.append(f"{spec} (lock: {version or 'missing'})")
    assert not wrong, "requirements.lock is stale; run `make lock` and commit it:\n" + "\n".join(wrong)


def test_torch_is_the_local_cpu_wheel():
    assert _lock()["torch"].endswith("+cpu"), "the lock must pin the CPU wheel (a CUDA build pulls 5 GB)"
    assert not [n for n in _lock() if n.startswith("nvidia-")]
