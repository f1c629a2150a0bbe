"""validation: a real great-expectations suite; each kind of bad row is named with its id, never its value."""

import json

import pandas as pd
import pytest

from tests.conftest import make_texts
from tuneline.params import ValidateParams
from tuneline.data.records import record_id
from tuneline.data.validation import SCHEMA, build_suite, failure_message, render_html, validate_records

LABELS = ["ham", "spam"]
P = ValidateParams(min_rows_per_class=10, min_chars=2, max_chars=200, max_examples=5)
PII_CHECKS = {"no_email_left", "no_phone_left", "no_credit_card_left"}
EMAIL = "jane.doe@example.com"
PHONE = "+44 7700 900123"
CARD = "4111 1111 1111 1111"


def good_records(n: int = 60) -> pd.DataFrame:
    """Cleaned records as the clean stage writes them: 15 spam, 45 ham."""
    df = make_texts(n)
    df["id"] = [record_id(t, lab) for t, lab in zip(df["text"], df["label"])]
    df["source"] = "t"
    df["row"] = range(1, n + 1)
    df["pii_replaced"] = False
    df["pii_count"] = 0
    return df[list(SCHEMA)]


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return good_records()


@pytest.fixture(scope="module")
def passing(good):
    return validate_records(good, P, LABELS)


def test_good_records_pass(passing):
    s = passing
    assert s["success"] is True and s["failed"] == []
    assert s["rows"] == 60 and s["labels"] == {"ham": 45, "spam": 15}
    assert s["expectations"]["evaluated"] == len(build_suite(P, LABELS).expectations) == s["expectations"]["passed"]
    names = [c["name"] for c in s["checks"]]  # report order is suite order
    assert names == [e.meta["check"] for e in build_suite(P, LABELS).expectations]
    assert {"columns_present", "text_not_blank", "text_length", "label_in_set", "id_unique",
            "min_rows_ham", "min_rows_spam"} | PII_CHECKS <= set(names)


# One frame holding every row-level defect on its own row, validated once: each check must name
# exactly its own row(s) and no check may fire on another defect's row.
# (case, column, value, row, the checks that must fail on that row)
DEFECTS = [
    ("null text", "text", None, 7, {"text_not_null"}),
    ("whitespace-only text", "text", "  \t  ", 10, {"text_not_blank"}),
    ("empty text", "text", "", 13, {"text_not_blank", "text_length"}),
    ("label outside the set", "label", "eggs", 17, {"label_in_set"}),
    ("duplicate ids", "id", "DUP", 18, {"id_unique"}),  # row 19 gets the same id
    ("too-long text", "text", "word " * 41, 21, {"text_length"}),
    ("e-mail left", "text", f"write to {EMAIL} today", 22, {"no_email_left"}),
    ("phone left", "text", f"call me on {PHONE} later", 23, {"no_phone_left"}),
    ("card left", "text", f"my card is {CARD} thanks", 25, {"no_credit_card_left"}),
    ("row without an id", "id", None, 26, {"id_not_null"}),
]


@pytest.fixture(scope="module")
def defective(good):
    df = good.copy()
    for _, col, value, row, _ in DEFECTS:
        df.loc[row, col] = value
    df.loc[19, "id"] = "DUP"
    return df, validate_records(df, P, LABELS)


def _ref(df, case, row):
    if case == "row without an id":
        return f"(no id, row {row})"  # the id itself is missing: the row is named by position
    return df.loc[row, "id"]


def test_defects_fail_exactly_their_expectations_on_exactly_their_rows(defective):
    df, s = defective
    assert s["success"] is False
    expected: dict[str, list[str]] = {}
    for case, _, _, row, checks in DEFECTS:
        for name in checks:
            expected.setdefault(name, []).append(_ref(df, case, row))
    assert set(s["failed"]) == set(expected)
    assert s["expectations"]["failed"] == len(expected) == s["expectations"]["evaluated"] - s["expectations"]["passed"]
    for c in s["checks"]:
        if c["name"] in expected:
            assert c["example_ids"] == expected[c["name"]], c  # row order; a shared duplicate id once
            assert c["unexpected_count"] == len(expected[c["name"]]) + (c["name"] == "id_unique"), c
        else:
            assert c["success"] and c["example_ids"] == [], c


@pytest.mark.parametrize("case,col,value,row,expected", DEFECTS, ids=[d[0] for d in DEFECTS])
def test_each_defect_names_its_expectation_and_row_id(defective, case, col, value, row, expected):
    df, s = defective
    ref = _ref(df, case, row)
    msg = failure_message(s)
    for name in expected:
        check = next(c for c in s["checks"] if c["name"] == name)
        assert check["success"] is False and ref in check["example_ids"], (name, check)
        line = next(x for x in msg.splitlines() if x.startswith(f"  - {name} ("))
        assert ref in line and "offending row" in line


def test_values_never_leave_the_validation(defective):
    _, s = defective
    dumped = json.dumps(s) + render_html(s) + failure_message(s)
    for value in (EMAIL, PHONE, CARD, "word word"):
        assert value not in dumped


def test_class_below_min_rows_lists_the_rows_it_has(good):
    spam = good.index[good["label"] == "spam"]
    df = good.drop(spam[3:]).reset_index(drop=True)  # 3 spam rows left, min is 10
    df.loc[4, "text"] = f"write to {EMAIL} today"  # a spam row
    lenient = ValidateParams(min_rows_per_class=10, forbid_pii_patterns=[], max_examples=2)
    s = validate_records(df, lenient, LABELS)
    assert not PII_CHECKS & {c["name"] for c in s["checks"]}  # no pattern checks asked for: the e-mail passes
    assert s["failed"] == ["min_rows_spam"]
    check = next(c for c in s["checks"] if c["name"] == "min_rows_spam")
    assert check["observed"] == 3
    assert check["example_ids"] == list(df.loc[[0, 4], "id"])  # the spam rows there are, up to max_examples
    msg = failure_message(s)
    assert "min_rows_spam" in msg and "at least 10 rows with label spam; observed 3" in msg


def test_schema_missing_column_and_wrong_type(good):
    df = good.drop(columns=["source"]).assign(pii_count=good["pii_count"].astype(str))
    s = validate_records(df, P, LABELS)
    by_name = {c["name"]: c for c in s["checks"]}
    assert by_name["columns_present"]["missing_columns"] == ["source"]
    assert by_name["pii_count_type"]["success"] is False and by_name["pii_count_type"]["observed"] == "str"
    assert by_name["source_not_null"]["error"] == "column 'source' is missing"
    assert set(s["failed"]) == {"columns_present", "source_type", "source_not_null", "pii_count_type"}
    msg = failure_message(s)
    assert "missing columns ['source']" in msg and "could not run: column 'source' is missing" in msg


def test_html_is_self_contained_and_names_failures(passing, defective):
    df, s = defective
    page = render_html(s)
    low = page.lower()
    for ref in ("http://", "https://", "<script", "<link", "src=", "url(", "@import", "<iframe", "<img"):
        assert ref not in low, ref
    assert "<style>" in page and "FAIL" in page
    for name in s["failed"]:
        assert f"<li>{name} (" in page  # in the failed list at the top
    assert df.loc[17, "id"] in page
    ok = render_html(passing)
    assert "All expectations passed" in ok and "FAIL" not in ok and "http" not in ok.lower()


def test_html_escapes_ids():
    s = {"success": False, "rows": 1, "labels": {"<b>": 1}, "great_expectations_version": "x",
         "expectations": {"evaluated": 1, "passed": 0, "failed": 1},
         "checks": [{"name": "id_unique", "expectation": "expect_column_values_to_be_unique", "column": "id",
                     "description": "ids are unique", "success": False, "unexpected_count": 2,
                     "example_ids": ['<script>alert("x")</script>']}]}
    page = render_html(s)
    assert "<script" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page


def test_length_bounds_must_be_ordered():
    with pytest.raises(ValueError, match=r"validate.min_chars \(10\) must be <= validate.max_chars \(5\)"):
        ValidateParams(min_chars=10, max_chars=5)


# Issue 14: phone numbers glued to other text passed the phone check (its pattern wanted a
# non-word character on both sides). The SMS data has these shapes (values made up here).
GLUED_PHONES = ["Help08712402972", "ph:08700435505150p", "TsCs087147403231Winawk", "claim call 087123002209am",
                "STOP 008704050406 SP", "call 09066649731from"]
NOT_PHONES = ["Ref:9307622", "Stop 80122300p/wk", "ECE 0.0071234567891", "at 2026-12-03 23:25", "<PHONE_NUMBER>150p"]


def test_glued_phone_numbers_fail_the_phone_check(good):
    df = good.copy()
    rows = list(range(30, 30 + len(GLUED_PHONES)))
    for row, value in zip(rows, GLUED_PHONES):
        df.loc[row, "text"] = f"txt {value} now"
    for row, value in enumerate(NOT_PHONES, start=40):
        df.loc[row, "text"] = value
    s = validate_records(df, ValidateParams(min_rows_per_class=10, max_chars=200, max_examples=20), LABELS)
    assert s["failed"] == ["no_phone_left"]
    check = next(c for c in s["checks"] if c["name"] == "no_phone_left")
    assert check["example_ids"] == [df.loc[r, "id"] for r in rows]  # exactly the glued rows, not the others
    dumped = json.dumps(s) + failure_message(s)
    assert not any(v in dumped for v in GLUED_PHONES)
