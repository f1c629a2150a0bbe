"""validate stage: the report and metrics are written either way; failure stops with names and ids."""

import pytest
import yaml

from stages import validate
from tuneline.errors import EXIT_USER_ERROR, run_main
from tests.tuneline.test_validation import EMAIL, good_records
from tuneline.params import ClassificationParams, Paths, ValidateParams
from tuneline.data.records import read_json, write_parquet

BASE = ClassificationParams(labels=["ham", "spam"])
P = ValidateParams(min_rows_per_class=10, max_chars=200)


def _setup(tmp_path, df):
    paths = Paths(clean=str(tmp_path / "clean"), metrics=str(tmp_path / "m"), reports=str(tmp_path / "r"))
    write_parquet(df, tmp_path / "clean" / "records.parquet")
    return paths


def test_good_records_write_passing_report(tmp_path):
    out = validate.run(P, BASE, _setup(tmp_path, good_records()))
    metrics = read_json(tmp_path / "m" / "validation.json")
    assert out["success"] is metrics["success"] is True
    assert metrics["rows"] == 60 and metrics["expectations"]["failed"] == 0
    assert metrics["report"] == str(tmp_path / "r" / "validation.html")
    assert "All expectations passed" in (tmp_path / "r" / "validation.html").read_text(encoding="utf-8")


def test_failure_writes_both_outputs_then_raises(tmp_path):
    df = good_records()
    df.loc[7, "text"] = f"write to {EMAIL} today"
    df.loc[8, "id"] = df.loc[9, "id"]
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(P, BASE, _setup(tmp_path, df))
    msg = str(err.value)
    assert "no_email_left" in msg and df.loc[7, "id"] in msg
    assert "id_unique" in msg and df.loc[9, "id"] in msg
    assert "validation.html" in msg and EMAIL not in msg
    metrics = read_json(tmp_path / "m" / "validation.json")
    assert metrics["success"] is False and set(metrics["failed"]) == {"no_email_left", "id_unique"}
    assert metrics["expectations"]["failed"] == 2
    page = (tmp_path / "r" / "validation.html").read_text(encoding="utf-8")
    assert "no_email_left" in page and "id_unique" in page and EMAIL not in page


def test_main_exits_nonzero_with_the_message(tmp_path, monkeypatch, repo_root, capsys):
    df = good_records()
    df.loc[3, "label"] = "eggs"
    paths = _setup(tmp_path, df)
    params = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    params["paths"].update(paths.model_dump(include={"clean", "metrics", "reports"}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_main(validate.main)
    assert exit_.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "label_in_set" in err and df.loc[3, "id"] in err
    assert "Traceback" not in err
    assert read_json(tmp_path / "m" / "validation.json")["success"] is False
