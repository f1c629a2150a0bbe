"""Leak audit: find personal data left in the artifacts a pipeline run ships, and say where, never what.

The detectors here are independent of the clean stage (tuneline.data.pii, presidio): plain regexes
plus checksums, so a bug or a blind spot in presidio's recognizers is not repeated here. Each
detector takes a text and returns the spans it found:

  email           name@domain.tld, also glued to other text ("mailme@x.co.ukNOW")
  phone           national numbers with a trunk 0 (0 + 9-10 digits: UK 07781 482378), international
                  (+44 ..., 0044 ...), NANP with separators ((212) 555-0123); only a digit (or a
                  decimal point after a digit) before it ends a number, so numbers glued to text
                  ("Help08712402972", "08718726270150p") are found
  credit_card     13-19 digits (single spaces/dashes allowed) with a card-network first digit
                  (2-6) and a valid Luhn check digit
  iban            two capital letters + two check digits + the country's BBAN length, mod-97 == 1
  ipv4, ipv6      dotted quads 0-255; IPv6 that Python's ipaddress parses, >= 3 groups
  street_address  "<house number> <Capitalized Name(s)> Road|Street|Avenue|..." (also when the
                  street name became a placeholder: "113 <LOCATION> Road" keeps the house number)
  postcode        UK postcodes (SW1A 1AA, W1J6HL) and US ZIP+4 (12345-6789)

Before detection, what the clean stage and the pipeline legitimately write is blanked out:
placeholders (<PHONE_NUMBER>, hash outputs <PHONE_NUMBER_1a2b3c4d>), record ids and sha256
hashes (hex with letters and digits), and base64 data URIs (the report's embedded figures).
Matches that fully match an allow-list regex (params `audit.allow`) are ignored.

`scan_file` reads a parquet (every string column, located by the row's `id`), a JSON file (every
string value and key, located by its JSON path and the enclosing object's `id`) or a text/HTML
file (located by line), and returns `Finding`s: file, location, detector. A finding holds no
value. `audit_files` runs it over a list of files and returns the summary the audit stage writes.

Canaries (`make_canaries`, `find_canaries`): unique synthetic secrets of each detector's kind,
valid by its checksum, for tests that plant values and check they are caught or not reproduced
(the generation memorization test, once the pipeline trains generation models).
"""

from __future__ import annotations

import html
import ipaddress
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Span = tuple[int, int]

# --------------------------------------------------------------------------- blanking
PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z0-9_]*[A-Z0-9](?:_[0-9a-f]{8})?>")
"""What the clean stage writes instead of a value: <TYPE> (replace) and <TYPE_1a2b3c4d> (hash)."""
HEX_TOKEN_RE = re.compile(r"(?<![0-9A-Za-z])(?:[0-9a-f]{64}|[0-9a-f]{40}|[0-9a-f]{32}|[0-9a-f]{16})(?![0-9A-Za-z])")
"""Record ids (16 hex), md5/sha1/sha256 hashes; blanked only when they mix letters and digits, so an
all-digit 16-digit string (a card number) is still checked."""
DATA_URI_RE = re.compile(r"data:[\w.+/-]+;base64,[A-Za-z0-9+/=]+")
"""Embedded figures in the HTML report: random base64, not text."""
BLANK = "\x1a"
"""Placeholders become runs of this (not a word character, not a digit): text glued to a
placeholder stays separated, and the street detector can still see "113 <LOCATION> Road"."""


def _blank_hex(m: re.Match) -> str:
    s = m.group()
    return " " * len(s) if re.search(r"[a-f]", s) and re.search(r"\d", s) else s


def prepare(text: str) -> str:
    """The text with placeholders, ids/hashes and data URIs blanked out (same length)."""
    text = DATA_URI_RE.sub(lambda m: " " * len(m.group()), text)
    text = PLACEHOLDER_RE.sub(lambda m: BLANK * len(m.group()), text)
    return HEX_TOKEN_RE.sub(_blank_hex, text)


# --------------------------------------------------------------------------- detectors
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")

_NUM_START = r"(?<![\d+])(?<!\d[.,])"  # no digit or '+' before, and not the decimals of a number
PHONE_RES = [
    re.compile(_NUM_START + r"0[1-9](?:[ .-]?\d){8,9}"),  # trunk 0: UK 07781 482378, 08712402972...
    re.compile(_NUM_START + r"(?:\+|00)[1-9](?:[ .-]?\(?\d\)?){7,13}"),  # +44 7781 482378, 0044..., +1 (212)...
    re.compile(r"(?<![\d+])(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}(?!\d)"),  # NANP, separated
]

CARD_RE = re.compile(_NUM_START + r"[2-6]\d(?:[ -]?\d){11,17}(?!\d)")

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
"""IBAN length per country (ISO 13616 registry)."""
IBAN_START_RE = re.compile(r"(?=([A-Z]{2})\d{2})")

IPV4_RE = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                     r"(?!\d|\.\d)")
IPV6_RE = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")

STREET_SUFFIXES = ("Road|Rd|Street|St|Avenue|Ave|Lane|Ln|Drive|Dr|Close|Way|Place|Pl|Court|Ct|Crescent|Cres|"
                   "Terrace|Grove|Gardens|Gdns|Boulevard|Blvd|Square|Sq|Mews|Parade|Highway|Hwy")
STREET_RE = re.compile(
    r"(?<![\w.,£$€])\d{1,5}[A-Za-z]?,?[ \t]+"                 # house number (12, 12a), not a price
    rf"(?:(?:[A-Z][a-z'-]+|{BLANK}+)[ \t]+){{1,3}}"            # 1-3 capitalized words, or a placeholder
    rf"(?:{STREET_SUFFIXES})\b"
)
POSTCODE_RES = [
    re.compile(r"(?<![A-Za-z0-9])(?:[A-Z]{1,2}\d[A-Z\d]?|GIR) ?\d[ABD-HJLNP-UW-Z]{2}(?![A-Za-z0-9])"),  # UK
    re.compile(r"(?<![\d-])\d{5}-\d{4}(?![\d-])"),  # US ZIP+4
]


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97 check of an IBAN without spaces."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _regex_detector(*patterns: re.Pattern) -> Callable[[str], list[Span]]:
    def detect(text: str) -> list[Span]:
        return [m.span() for rx in patterns for m in rx.finditer(text)]
    return detect


def _cards(text: str) -> list[Span]:
    out = []
    for m in CARD_RE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            out.append(m.span())
    return out


def _ibans(text: str) -> list[Span]:
    out: list[Span] = []
    for m in IBAN_START_RE.finditer(text):
        start = m.start()
        if out and start < out[-1][1]:
            continue
        want = IBAN_LENGTHS.get(m.group(1))
        if want is None:
            continue
        chars, i = [], start
        while i < len(text) and len(chars) < want:
            c = text[i]
            if c.isascii() and c.isalnum():
                chars.append(c)
            elif not (c == " " and chars and i + 1 < len(text) and text[i + 1] != " "):
                break
            i += 1
        if len(chars) == want and iban_ok("".join(chars)):
            out.append((start, i))
    return out


def _ipv4(text: str) -> list[Span]:
    return [m.span() for m in IPV4_RE.finditer(text)]


def _ipv6(text: str) -> list[Span]:
    out = []
    for m in IPV6_RE.finditer(text):
        s = m.group()
        if sum(1 for g in s.split(":") if g) < 3:
            continue
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            continue
        out.append(m.span())
    return out


DETECTORS: dict[str, Callable[[str], list[Span]]] = {
    "email": _regex_detector(EMAIL_RE),
    "phone": _regex_detector(*PHONE_RES),
    "credit_card": _cards,
    "iban": _ibans,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "street_address": _regex_detector(STREET_RE),
    "postcode": _regex_detector(*POSTCODE_RES),
}
"""Detector name -> function(prepared text) -> spans. Names are what findings and params use."""


class Auditor:
    """The chosen detectors and allow-list, applied to texts. Reports detector names, never values."""

    def __init__(self, detectors: Sequence[str] = tuple(DETECTORS), allow: Sequence[str] = ()):
        unknown = sorted(set(detectors) - set(DETECTORS))
        if unknown:
            raise ValueError(f"unknown audit detector(s) {unknown}; known: {sorted(DETECTORS)}")
        self.detectors = list(detectors)
        self.allow = [re.compile(a) for a in allow]

    def detect(self, text: str) -> list[str]:
        """Detector names that hit `text`, one entry per hit (in detector order)."""
        if not text:
            return []
        prepared = prepare(text)
        hits = []
        for name in self.detectors:
            for a, b in DETECTORS[name](prepared):
                value = text[a:b]
                if not any(rx.fullmatch(value) for rx in self.allow):
                    hits.append(name)
        return hits


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class Finding:
    """Where a detector hit: the file, a location (row id, JSON path, line), the detector. No value."""

    file: str
    where: str
    detector: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.detector}"


@dataclass
class FileScan:
    path: str
    kind: str
    """parquet | json | text"""
    units: int
    """Rows (parquet), string values (json) or lines (text) scanned."""
    findings: list[Finding]


def _dedup(findings: Iterable[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


def scan_frame(df: Any, file: str, auditor: Auditor) -> FileScan:
    """Every string cell of a DataFrame; a hit is located by the row's `id` (else its position)."""
    ids = df["id"].astype(str).tolist() if "id" in df.columns else None
    findings = []
    for col in df.columns:
        if df[col].dtype.kind in "biufcmM":  # numbers, booleans, datetimes: nothing to read
            continue
        for i, v in enumerate(df[col].tolist()):
            if isinstance(v, str):
                for det in auditor.detect(v):
                    where = f"id={ids[i]}" if ids is not None else f"row {i}"
                    findings.append(Finding(file, f"{where} (column {col})", det))
    return FileScan(file, "parquet", len(df), _dedup(findings))


def _walk_json(obj: Any, path: str, owner_id: str | None) -> Iterator[tuple[str, str, str | None]]:
    if isinstance(obj, dict):
        oid = obj.get("id") if isinstance(obj.get("id"), str) else owner_id
        for k, v in obj.items():
            yield str(k), f"{path} (key)", oid
            yield from _walk_json(v, f"{path}.{k}" if re.fullmatch(r"\w+", str(k)) else f"{path}[{json.dumps(k)}]", oid)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_json(v, f"{path}[{i}]", owner_id)
    elif isinstance(obj, str):
        yield obj, path, owner_id


def scan_json(obj: Any, file: str, auditor: Auditor) -> FileScan:
    """Every string value and key of a parsed JSON document, located by JSON path (+ the enclosing id)."""
    findings, n = [], 0
    for value, path, oid in _walk_json(obj, "$", None):
        n += 1
        for det in auditor.detect(value):
            findings.append(Finding(file, path + (f" (id={oid})" if oid else ""), det))
    return FileScan(file, "json", n, _dedup(findings))


def scan_text(text: str, file: str, auditor: Auditor, is_html: bool = False) -> FileScan:
    """Line by line; HTML entities are decoded first (tags and attributes are scanned as they are)."""
    findings = []
    lines = text.splitlines()
    for i, line in enumerate(lines, start=1):
        if is_html:
            line = html.unescape(DATA_URI_RE.sub(" ", line))
        for det in auditor.detect(line):
            findings.append(Finding(file, f"line {i}", det))
    return FileScan(file, "text", len(lines), _dedup(findings))


def scan_file(path: str | Path, auditor: Auditor) -> FileScan:
    """Scan one artifact by its suffix: .parquet, .json, anything else as text."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        return scan_frame(pd.read_parquet(path), str(path), auditor)
    text = path.read_text(encoding="utf-8", errors="replace")
    if suffix == ".json":
        return scan_json(json.loads(text), str(path), auditor)
    return scan_text(text, str(path), auditor, is_html=suffix in (".html", ".htm"))


def audit_files(files: Sequence[str | Path], auditor: Auditor, max_listed: int = 50) -> dict[str, Any]:
    """Scan every file; the summary holds counts, file names and locations, never a value."""
    scans = [scan_file(f, auditor) for f in files]
    findings = [f for s in scans for f in s.findings]
    per_detector = {name: 0 for name in auditor.detectors}
    for f in findings:
        per_detector[f.detector] += 1
    units = {kind: sum(s.units for s in scans if s.kind == kind) for kind in ("parquet", "json", "text")}
    return {
        "passed": not findings,
        "files_scanned": len(scans),
        "rows_scanned": units["parquet"],
        "json_values_scanned": units["json"],
        "text_lines_scanned": units["text"],
        "hits": len(findings),
        "hits_per_detector": per_detector,
        "files_with_hits": len({f.file for f in findings}),
        "detectors": list(auditor.detectors),
        "allow_patterns": len(auditor.allow),
        "files": [{"path": s.path, "kind": s.kind, "units": s.units, "hits": len(s.findings)} for s in scans],
        "findings": [asdict(f) for f in findings[:max_listed]],
        "findings_listed": min(len(findings), max_listed),
    }


def failure_message(summary: dict[str, Any], max_listed: int) -> str:
    """Names each hit by file, location and detector (values are never shown) and what to do."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["hits_per_detector"].items() if v)
    lines = [f"{summary['hits']} personal-data hit(s) in {summary['files_with_hits']} of "
             f"{summary['files_scanned']} files ({counts}); values are not shown:"]
    lines += [f"  {Finding(**f)}" for f in summary["findings"][:max_listed]]
    if summary["hits"] > max_listed:
        lines.append(f"  ... and {summary['hits'] - max_listed} more (counts in the audit JSON)")
    lines.append("Anonymize them upstream (clean params, or the PII recognizers in tuneline) and rerun "
                 "`dvc repro`; a known non-personal pattern goes into audit.allow in params.yaml.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- canaries
@dataclass(frozen=True)
class Canary:
    """A unique synthetic secret of one detector's kind (valid by its checksum)."""

    kind: str
    value: str


def _luhn_digit(partial: str) -> str:
    for d in "0123456789":
        if luhn_ok(partial + d):
            return d
    raise AssertionError("unreachable")


def _iban(country: str, bban: str) -> str:
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def make_canaries(n: int, seed: int = 0,
                  kinds: Sequence[str] = ("email", "phone", "credit_card", "iban")) -> list[Canary]:
    """`n` unique canaries cycling over `kinds`, each valid (Luhn, mod-97) and unlikely to occur naturally:
    a random 8-hex tag in the e-mail, random digits elsewhere."""
    rng = random.Random(seed)  # nosec B311 # seeded for reproducible canaries, not a secret
    out: list[Canary] = []
    seen: set[str] = set()
    while len(out) < n:
        kind = kinds[len(out) % len(kinds)]
        if kind == "email":
            value = f"canary.{rng.getrandbits(32):08x}@example.org"
        elif kind == "phone":
            value = "07" + "".join(rng.choice("0123456789") for _ in range(9))
        elif kind == "credit_card":
            partial = "4" + "".join(rng.choice("0123456789") for _ in range(14))
            value = partial + _luhn_digit(partial)
        elif kind == "iban":
            bank = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
            value = _iban("GB", bank + "".join(rng.choice("0123456789") for _ in range(14)))
        else:
            raise ValueError(f"no canary generator for {kind!r}")
        if value not in seen:
            seen.add(value)
            out.append(Canary(kind, value))
    return out


def find_canaries(texts: Sequence[str], canaries: Sequence[Canary]) -> dict[int, list[int]]:
    """Canary index -> indices of the texts containing it (digits compared without separators),
    for canaries found at least once. Returns positions only, never the texts."""
    def squash(s: str) -> str:
        return re.sub(r"[\s.-]", "", s).lower()

    squashed = [squash(t) for t in texts]
    found: dict[int, list[int]] = {}
    for ci, c in enumerate(canaries):
        key = squash(c.value)
        hits = [ti for ti, t in enumerate(squashed) if key in t]
        if hits:
            found[ci] = hits
    return found
