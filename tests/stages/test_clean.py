"""The clean stage on small records written here: real text rules, real presidio, real files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from stages import clean
from tuneline.data.pii import leaks
from tuneline.params import ClassificationParams, CleanParams, Paths
from tuneline.data.records import RECORD_COLUMNS, record_id

BASE = ClassificationParams(labels=["ham", "spam"])
# quick settings: one process (the pool has its own test), small batches
PARAMS = CleanParams(max_chars=120, n_process=1, batch_size=16)

ROWS = [  # (text, label, expected reject reason prefix or "")
    ("Hi, this is John Smith, write to john.smith@example.com", "ham", ""),
    ("URGENT! Call 09061701461 to claim your prize", "spam", ""),
    ("pay with card 4111 1111 1111 1111 please", "spam", ""),
    ("<b>See</b> you&nbsp;at\tthe\n\nstation &amp; bring cake", "ham", ""),
    ("ok\u200b\x00 see\x07 you", "ham", ""),
    ("ｆｕｌｌ　ｗｉｄｔｈ ｔｅｘｔ １２３", "ham", ""),
    ("ok see you later", "ham", ""),
    ("", "ham", "empty"),
    ("   \t\n  ", "ham", "empty"),
    ("<br/><p></p>", "spam", "empty"),
    ("k", "ham", "too_short"),
    ("win " * 40, "spam", "too_long"),
    ("free prize, reply now", "maybe", "label_not_allowed"),
    # 119 characters before anonymization, longer after: the bounds hold for the final text
    ("mail a@bc.io " + "x" * 106, "ham", "too_long after anonymization"),
]


def _write_collected(tmp_path, rows=ROWS) -> Paths:
    paths = Paths(collected=str(tmp_path / "collected"), clean=str(tmp_path / "clean"),
                  rejects=str(tmp_path / "rejects"), metrics=str(tmp_path / "metrics"))
    df = pd.DataFrame([{"id": record_id(t, label), "text": t, "label": label, "source": "test", "row": i + 1}
                       for i, (t, label, _) in enumerate(rows)], columns=RECORD_COLUMNS)
    (tmp_path / "collected").mkdir()
    df.to_parquet(tmp_path / "collected" / "records.parquet", index=False)
    return paths


def _outputs(paths: Paths):
    return (pd.read_parquet(f"{paths.clean}/records.parquet"), pd.read_parquet(f"{paths.rejects}/clean.parquet"),
            json.loads(open(f"{paths.metrics}/clean.json", encoding="utf-8").read()))


def test_clean_normalizes_anonymizes_and_quarantines(tmp_path):
    paths = _write_collected(tmp_path)
    metrics = clean.run(PARAMS, BASE, paths)
    out, rejects, saved = _outputs(paths)
    assert saved == metrics

    # counts reconcile, and every bad row is quarantined with its reason
    assert metrics["rows_in"] == len(ROWS) == metrics["rows_out"] + metrics["rows_rejected"]
    assert metrics["rows_out"] == len(out) and metrics["rows_rejected"] == len(rejects)
    expected = {record_id(t, lab): why for t, lab, why in ROWS if why}
    got = dict(zip(rejects["id"], rejects["reason"]))
    assert set(got) == set(expected)
    for rid, why in expected.items():
        assert got[rid].startswith(why), (got[rid], why)
    assert rejects["reason"].notna().all() and (rejects["stage"] == "clean").all()
    assert metrics["rejected"] == {"empty": 3, "label_not_allowed": 1, "too_long": 1,
                                             "too_long after anonymization": 1, "too_short": 1}

    # the kept rows: cleaned, anonymized, same ids as collected, extra columns typed
    assert list(out.columns) == RECORD_COLUMNS + ["pii_replaced", "pii_count"]
    assert str(out["pii_count"].dtype) == "int64" and str(out["pii_replaced"].dtype) == "bool"
    texts = dict(zip(out["id"], out["text"]))
    ids = {t: record_id(t, lab) for t, lab, _ in ROWS}
    assert texts[ids[ROWS[0][0]]] == "Hi, this is <PERSON>, write to <EMAIL_ADDRESS>"
    assert texts[ids[ROWS[1][0]]] == "URGENT! Call <PHONE_NUMBER> to claim your prize"
    assert texts[ids[ROWS[2][0]]] == "pay with card <CREDIT_CARD> please"
    assert texts[ids[ROWS[3][0]]] == "See you at the station & bring cake"
    assert texts[ids[ROWS[4][0]]] == "ok see you"
    assert texts[ids[ROWS[5][0]]] == "full width text 123"
    assert texts[ids["ok see you later"]] == "ok see you later"
    for t in out["text"]:
        assert leaks.find_leaks(t) == {}
        assert PARAMS.min_chars <= len(t) <= PARAMS.max_chars

    # PII counts per type, matching the per-row counts, never the values
    by_entity = metrics["pii"]["by_entity"]
    assert by_entity["PERSON"] >= 1 and by_entity["EMAIL_ADDRESS"] == 1
    assert by_entity["PHONE_NUMBER"] == 1 and by_entity["CREDIT_CARD"] == 1
    assert sum(by_entity.values()) == metrics["pii"]["entities_replaced"] == int(out["pii_count"].sum())
    assert metrics["pii"]["rows_with_pii"] == int(out["pii_replaced"].sum()) == 3
    assert metrics["rows_changed_by_cleaning"] == 3
    raw = open(f"{paths.metrics}/clean.json", encoding="utf-8").read()
    for value in ("John", "john.smith@example.com", "09061701461", "4111", "a@bc.io"):
        assert value not in raw


def test_clean_output_is_byte_stable(tmp_path):
    paths = _write_collected(tmp_path)
    clean.run(PARAMS, BASE, paths)
    first = [open(f, "rb").read() for f in (f"{paths.clean}/records.parquet", f"{paths.rejects}/clean.parquet",
                                            f"{paths.metrics}/clean.json")]
    clean.run(PARAMS, BASE, paths)
    again = [open(f, "rb").read() for f in (f"{paths.clean}/records.parquet", f"{paths.rejects}/clean.parquet",
                                            f"{paths.metrics}/clean.json")]
    assert first == again


def test_hash_operator_and_no_anonymization(tmp_path):
    rows = [("mail a.b@example.com now", "ham", ""), ("again a.b@example.com", "spam", ""), ("hello there", "ham", "")]
    paths = _write_collected(tmp_path, rows)
    clean.run(CleanParams(pii_operator="hash", pii_hash_salt="s1", pii_entities=["EMAIL_ADDRESS"], n_process=1),
              BASE, paths)
    out, _, metrics = _outputs(paths)
    tokens = [t.split()[-2] if t.endswith("now") else t.split()[-1] for t in out["text"][:2]]
    assert tokens[0] == tokens[1] and tokens[0].startswith("<EMAIL_ADDRESS_")
    assert metrics["pii"]["by_entity"] == {"EMAIL_ADDRESS": 2}

    clean.run(CleanParams(pii_entities=[], n_process=1), BASE, paths)
    out, _, metrics = _outputs(paths)
    assert list(out["text"]) == [t for t, _, _ in rows]
    assert metrics["pii"]["entities_replaced"] == 0 and not out["pii_replaced"].any()


def test_missing_column_is_a_clear_error(tmp_path):
    paths = _write_collected(tmp_path)
    df = pd.read_parquet(f"{paths.collected}/records.parquet").drop(columns=["label"])
    df.to_parquet(f"{paths.collected}/records.parquet", index=False)
    with pytest.raises(clean.CleanError, match=r"records.parquet: missing column\(s\) \['label'\].*dvc repro collect"):
        clean.run(PARAMS, BASE, paths)


def test_missing_input_is_a_clear_error(tmp_path):
    paths = Paths(collected=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="records.parquet: missing; run the stage"):
        clean.run(PARAMS, BASE, paths)


def test_all_rows_rejected_is_an_error_that_points_at_the_rejects(tmp_path):
    paths = _write_collected(tmp_path, [("", "ham", "empty"), ("k", "spam", "too_short")])
    with pytest.raises(clean.CleanError, match="every one of 2 rows was rejected; see .*clean.parquet"):
        clean.run(PARAMS, BASE, paths)
    assert len(pd.read_parquet(f"{paths.rejects}/clean.parquet")) == 2


def test_unknown_or_invalid_clean_params_are_rejected():
    with pytest.raises(ValidationError, match="pii_treshold"):
        CleanParams(pii_treshold=0.5)
    with pytest.raises(ValidationError, match="pii_operator"):
        CleanParams(pii_operator="shred")
