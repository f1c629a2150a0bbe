"""collect: reading several formats into one schema, quarantining bad rows with reasons."""

import json

import pandas as pd
import pytest

from stages import collect
from tuneline.params import ClassificationParams, CollectParams, Paths
from tuneline.data.records import read_json


def _paths(tmp_path) -> Paths:
    return Paths(collected=str(tmp_path / "collected"), rejects=str(tmp_path / "rejects"),
                 metrics=str(tmp_path / "metrics"), cache=str(tmp_path / "cache"))


BASE = ClassificationParams(labels=["ham", "spam"])


def _params(*datasets) -> CollectParams:
    return CollectParams.model_validate({"datasets": list(datasets)})


def _csv_ds(path, **kw):
    return {"name": kw.pop("name", "csv"), "source": {"kind": "local", "path": str(path)}, "format": "csv", **kw}


def test_csv_jsonl_parquet_into_one_schema_with_stable_ids(tmp_path):
    (tmp_path / "a.csv").write_text("msg,cls\nhello there,0\nWIN cash now,1\nhello there,0\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"t": "see you at 5", "y": "ham"}) + "\n")
    pd.DataFrame({"t": ["claim prize"], "y": ["spam"]}).to_parquet(tmp_path / "c.parquet")
    p = _params(
        _csv_ds(tmp_path / "a.csv", text_column="msg", label_column="cls", label_map={"0": "ham", "1": "spam"}),
        {"name": "j", "source": {"kind": "local", "path": str(tmp_path / "*.jsonl")}, "format": "jsonl",
         "text_column": "t", "label_column": "y"},
        {"name": "pq", "source": {"kind": "local", "path": str(tmp_path / "c.parquet")}, "format": "parquet",
         "text_column": "t", "label_column": "y"},
    )
    paths = _paths(tmp_path)
    m = collect.run(p, BASE, paths)
    df = pd.read_parquet(tmp_path / "collected" / "records.parquet")
    assert list(df.columns) == ["id", "text", "label", "source", "row"]
    assert df["text"].tolist() == ["hello there", "WIN cash now", "see you at 5", "claim prize"]
    assert df["label"].tolist() == ["ham", "spam", "ham", "spam"]
    assert df["source"].tolist() == ["csv", "csv", "j", "pq"]
    assert m["duplicates"] == 1 and m["rows_read"] == 5 and m["rows_out"] == 4
    assert m["rows_read"] == m["rows_out"] + m["duplicates"] + m["rows_rejected"]
    first = (tmp_path / "collected" / "records.parquet").read_bytes()
    collect.run(p, BASE, paths)
    assert (tmp_path / "collected" / "records.parquet").read_bytes() == first, "re-collecting changed the bytes"
    assert read_json(tmp_path / "metrics" / "collect.json")["sources"]["csv"]["duplicates"] == 1


def test_bad_rows_are_quarantined_with_file_row_and_reason(tmp_path):
    raw = (b"text,label\n"
           b"fine message,ham\n"
           b"too,many,fields\n"                      # 3 fields: malformed
           b"bad bytes \xff\xfe here,spam\n"          # not UTF-8
           b",ham\n"                                # empty text: kept, the clean stage rejects it
           b"free entry,eggs\n"                      # label outside classification.labels
           b"no label,\n")
    (tmp_path / "bad.csv").write_bytes(raw)
    m = collect.run(_params(_csv_ds(tmp_path / "bad.csv")), BASE, _paths(tmp_path))
    rej = pd.read_parquet(tmp_path / "rejects" / "collect.parquet")
    reasons = dict(zip(rej["row"], rej["reason"]))
    assert "malformed CSV row: 3 fields" in reasons[3]
    assert "not valid utf-8" in reasons[4]
    assert "label 'eggs' not in classification.labels" in reasons[6]
    assert "missing label" in reasons[7]
    assert all(str(tmp_path / "bad.csv") in r for r in reasons.values()), "reason must name the file"
    assert set(rej["stage"]) == {"collect"}
    assert m["rows_read"] == m["rows_out"] + m["duplicates"] + m["rows_rejected"] == 6
    kept = pd.read_parquet(tmp_path / "collected" / "records.parquet")
    assert kept["text"].tolist() == ["fine message", ""]


def test_missing_column_is_a_clear_error(tmp_path):
    (tmp_path / "x.csv").write_text("body,queue\nhi,ham\n")
    with pytest.raises(collect.CollectError) as e:
        collect.run(_params(_csv_ds(tmp_path / "x.csv")), BASE, _paths(tmp_path))
    msg = str(e.value)
    assert "x.csv" in msg and "missing column(s) ['text', 'label']" in msg and "['body', 'queue']" in msg


def test_bad_jsonl_lines_are_quarantined(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "a b", "label": "ham"}\n{not json}\n[1,2]\n')
    collect.run(_params({"name": "j", "source": {"kind": "local", "path": str(tmp_path / "x.jsonl")},
                         "format": "jsonl"}), BASE, _paths(tmp_path))
    rej = pd.read_parquet(tmp_path / "rejects" / "collect.parquet")
    assert rej["row"].tolist() == [2, 3]
    assert "not valid JSON" in rej["reason"][0] and "expected a JSON object" in rej["reason"][1]


def test_missing_file_names_the_dataset(tmp_path):
    with pytest.raises(collect.CollectError, match="dataset 'csv'.*no file matches"):
        collect.run(_params(_csv_ds(tmp_path / "nope.csv")), BASE, _paths(tmp_path))


def test_hub_dataset_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = _params({"name": "h", "source": {"kind": "hub", "id": "org/data"}, "format": "hub"})
    with pytest.raises(collect.CollectError, match="dataset 'h'.*hub:org/data.*need the network"):
        collect.run(p, BASE, _paths(tmp_path))


def test_utf8_bom_and_crlf_read_like_plain_files(tmp_path):
    """What spreadsheet programs export: a byte-order mark before the header and CRLF line ends."""
    (tmp_path / "excel.csv").write_bytes("\ufefftext,label\r\nhello there,ham\r\n\"two\r\nlines\",spam\r\n".encode())
    (tmp_path / "bom.jsonl").write_bytes(("\ufeff" + json.dumps({"text": "see you", "label": "ham"}) + "\r\n").encode())
    p = _params(_csv_ds(tmp_path / "excel.csv"),
                {"name": "j", "source": {"kind": "local", "path": str(tmp_path / "bom.jsonl")}, "format": "jsonl"})
    m = collect.run(p, BASE, _paths(tmp_path))
    df = pd.read_parquet(tmp_path / "collected" / "records.parquet")
    assert df["text"].tolist() == ["hello there", "two\r\nlines", "see you"]
    assert df["label"].tolist() == ["ham", "spam", "ham"]
    assert m["rows_rejected"] == 0


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "empty file"),
    (b"\xef\xbb\xbf\r\n", "empty file"),
    (b"text,label\r\n", "header only, no data rows"),
    (b"body,queue\nhi,ham\n", "missing column(s) ['text', 'label']"),
])
def test_expected_user_errors_name_the_file(tmp_path, content, expected):
    (tmp_path / "x.csv").write_bytes(content)
    with pytest.raises(collect.CollectError) as e:
        collect.run(_params(_csv_ds(tmp_path / "x.csv")), BASE, _paths(tmp_path))
    assert expected in str(e.value) and str(tmp_path / "x.csv") in str(e.value)


def test_unknown_encoding_is_a_params_error(tmp_path):
    (tmp_path / "x.csv").write_text("text,label\nhi,ham\n")
    with pytest.raises(collect.CollectError, match="unknown encoding 'utf-9'"):
        collect.run(_params(_csv_ds(tmp_path / "x.csv", encoding="utf-9")), BASE, _paths(tmp_path))
