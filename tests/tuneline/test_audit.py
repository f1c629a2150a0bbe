"""Leak audit detectors: each finds its kind (also glued to text) and ignores look-alikes, placeholders and ids."""

import json
import typing

import pandas as pd
import pytest

from tuneline.data.audit import (
    DETECTORS, Auditor, Canary, audit_files, failure_message, find_canaries, iban_ok, luhn_ok, make_canaries,
    scan_frame, scan_json, scan_text,
)
from tuneline.params import AuditDetector, AuditParams

# (detector, text that must hit it); the values are synthetic
POSITIVE = [
    ("email", "mail jane.doe@example.com about it"),
    ("email", "write2bob_smith@mail.co.uk"),
    ("phone", "Call me on 07781 482378 tonight"),
    ("phone", "txt STOP Help08712402972"),
    ("phone", "call 08718726270150p per min"),
    ("phone", "TsCs087147403231Winawk!"),
    ("phone", "ring +44 7700 900123"),
    ("phone", "or 0044 7700900123"),
    ("phone", "office (212) 555-0123"),
    ("phone", "cell 212-555-0123."),
    ("credit_card", "card 4111 1111 1111 1111 exp 12/29"),
    ("credit_card", "mc 5500-0000-0000-0004"),
    ("credit_card", "amex 378282246310005"),
    ("credit_card", "card4111111111111111end"),
    ("iban", "IBAN GB82 WEST 1234 5698 7654 32 please"),
    ("iban", "to DE89370400440532013000."),
    ("iban", "ibanGB82WEST12345698765432thanks"),
    ("ipv4", "from 192.168.1.20 at noon"),
    ("ipv4", "host=10.0.0.1;"),
    ("ipv6", "addr 2001:db8::8a2e:370:7334 ok"),
    ("ipv6", "fe80:0:0:0:200:f8ff:fe21:67cf"),
    ("street_address", "deliver to 113 Mill Road please"),
    ("street_address", "at 12a Baker Street, flat 2"),
    ("street_address", "113 <LOCATION> Road"),  # the street anonymized, the house number left: a partial leak
    ("postcode", "London SW1A 1AA"),
    ("postcode", "Row/W1J6HL LDN"),
    ("postcode", "zip 12345-6789"),
]

# (detector, text that must NOT hit it): placeholders, clean-stage hashes, ids, look-alikes
NEGATIVE = [
    ("email", "<EMAIL_ADDRESS> and <EMAIL_ADDRESS_1a2b3c4d>"),
    ("email", "see you @home or @ 5"),
    ("phone", "call <PHONE_NUMBER> or <PHONE_NUMBER_0a1b2c3d>"),
    ("phone", "<PHONE_NUMBER>150p per msg"),
    ("phone", "text WIN to 87121"),
    ("phone", "Ref:9307622 and POBOX 7876150ppm"),
    ("phone", "ece 0.08712402972 and 1.0044770090012"),
    ("phone", "ran 2026-12-03 23:25:01 on 3.8.18"),
    ("phone", "id 08712402972abcde in a record id"),
    ("phone", "sha256 f94c6d4ba4a9d56144bfee12caef9d85dc1370931712814b26dcee41673ee1e4"),
    ("credit_card", "card 4111 1111 1111 1112"),  # Luhn fails
    ("credit_card", "number 1234567812345670"),  # no card network starts with 1
    ("credit_card", "<CREDIT_CARD> and ****************"),
    ("iban", "GB82 WEST 1234 5698 7654 33"),  # mod-97 fails
    ("iban", "<IBAN_CODE> and XX82WEST12345698765432"),  # no such country
    ("ipv4", "great-expectations 1.24.1, torch 2.13.0"),
    ("ipv4", "999.1.1.1 and 1.2.3.4.5"),
    ("ipv6", "at 23:25:01 and a::b"),
    ("ipv6", "<IP_ADDRESS>"),
    ("street_address", "Win a £100 High Street prize"),
    ("street_address", "see you at 5 pm Road trip"),
    ("postcode", "<LOCATION> and W1 or SW1A"),
    ("postcode", "from 2023-12 to 2024-01"),
]


@pytest.mark.parametrize("detector,text", POSITIVE, ids=[f"{d}:{t[:24]}" for d, t in POSITIVE])
def test_detector_finds_its_kind(detector, text):
    assert detector in Auditor([detector]).detect(text)


@pytest.mark.parametrize("detector,text", NEGATIVE, ids=[f"{d}:{t[:24]}" for d, t in NEGATIVE])
def test_detector_ignores_look_alikes_and_placeholders(detector, text):
    assert Auditor([detector]).detect(text) == []


def test_every_detector_has_positive_and_negative_cases():
    assert {d for d, _ in POSITIVE} == {d for d, _ in NEGATIVE} == set(DETECTORS)


def test_params_know_exactly_the_detectors():
    assert list(typing.get_args(AuditDetector)) == list(DETECTORS) == AuditParams().detectors


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # one short of GB's length


def test_allow_list_ignores_only_matching_values():
    auditor = Auditor(["ipv4"], allow=[r"192\.168\.\d+\.\d+"])
    assert auditor.detect("lan 192.168.1.20") == []
    assert auditor.detect("wan 10.0.0.1") == ["ipv4"]


def test_unknown_detector_and_bad_allow_regex_are_errors():
    with pytest.raises(ValueError, match="unknown audit detector"):
        Auditor(["phone", "nope"])
    with pytest.raises(ValueError, match="allow"):
        AuditParams(allow=["("])


def test_scans_name_row_id_json_path_and_line_never_the_value():
    phone = "07781 482378"
    auditor = Auditor()
    df = pd.DataFrame({"id": ["a1b2c3d4e5f60718", "0f1e2d3c4b5a6978"], "text": ["fine <PHONE_NUMBER>", f"ring {phone}"],
                       "row": [1, 2]})
    frame = scan_frame(df, "splits/train.parquet", auditor)
    assert [str(f) for f in frame.findings] == ["splits/train.parquet: id=0f1e2d3c4b5a6978 (column text): phone"]
    doc = [{"id": "a1b2c3d4e5f60718", "text": "ok"}, {"id": "0f1e2d3c4b5a6978", "text": f"x {phone}"}]
    js = scan_json(doc, "mistakes.json", auditor)
    assert [f.where for f in js.findings] == ["$[1].text (id=0f1e2d3c4b5a6978)"] and js.units == 8  # 4 keys + 4 values
    txt = scan_text(f"# card\n\nline two\nmail me: a.b@example.org\n", "README.md", auditor)
    assert [(f.where, f.detector) for f in txt.findings] == [("line 4", "email")] and txt.units == 4
    html = scan_text('<img src="data:image/png;base64,0871240297212345AAAA"><td>a.b&#64;example.org</td>',
                     "index.html", auditor, is_html=True)
    assert [f.detector for f in html.findings] == ["email"]  # entities decoded; embedded images skipped


def test_audit_files_summary_counts_and_message(tmp_path):
    pd.DataFrame({"id": ["a1b2c3d4e5f60718"] * 2, "text": ["ok", "Help08712402972"]}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "m.json").write_text(json.dumps({"note": "card 4111 1111 1111 1111", "n": 3}))
    (tmp_path / "r.md").write_text("all fine\n")
    s = audit_files([tmp_path / "t.parquet", tmp_path / "m.json", tmp_path / "r.md"], Auditor(), max_listed=1)
    assert s["passed"] is False and s["files_scanned"] == 3 and s["rows_scanned"] == 2 and s["hits"] == 2
    assert s["hits_per_detector"]["phone"] == 1 and s["hits_per_detector"]["credit_card"] == 1
    assert s["files_with_hits"] == 2 and len(s["findings"]) == 1
    msg = failure_message(s, 1)
    assert "t.parquet: id=a1b2c3d4e5f60718 (column text): phone" in msg and "1 more" in msg
    assert "08712402972" not in msg + json.dumps(s) and "4111" not in msg + json.dumps(s)


def test_canaries_are_unique_valid_and_caught():
    canaries = make_canaries(12, seed=3)
    assert len({c.value for c in canaries}) == 12 and {c.kind for c in canaries} == {"email", "phone", "credit_card",
                                                                                     "iban"}
    assert make_canaries(12, seed=3) == canaries and make_canaries(12, seed=4) != canaries
    for c in canaries:
        assert c.kind in Auditor([c.kind]).detect(f"secret:{c.value}"), c.kind


def test_find_canaries_reports_positions_even_with_separators():
    canaries = [Canary("phone", "07781482378"), Canary("email", "canary.0a1b2c3d@example.org")]
    texts = ["nothing here", "ring 07781 482 378 now", "CANARY.0A1B2C3D@EXAMPLE.ORG", "07781 482 379"]
    assert find_canaries(texts, canaries) == {0: [1], 1: [2]}
    assert find_canaries(["clean"], canaries) == {}
