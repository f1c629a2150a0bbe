"""Asset resolution against the real package index (PyPI is reachable on every machine here).

Uses a tiny wheel (six==1.16.0, 11 kB) so the download is cheap."""

import hashlib
import zipfile

import pytest

from tuneline import assets
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
