"""Regexes that must find nothing in anonymized text (validate stage, serving, the clean stage's safety net).

They are deliberately narrower than presidio: they look for the common written forms only, so that
order numbers, prices, dates and short codes (`txt WIN to 87066`) are not flagged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LEAK_PATTERNS: dict[str, str] = {
    # name@domain.tld
    "email": r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])",
    # +<country> and 7-14 more digits, or a national number: 0, 1-9 and 8-10 more digits (UK style
    # 07700 900123) or a 10-digit NANP number (212-555-0123, (212) 555 0123), with single
    # spaces, dots or dashes between digit groups; or, glued to other text ("Help08712402972",
    # "08718726270150p", "TsCs087147403231"), a trunk-0 national number (0 + 9-10 digits) or an
    # international one (+ or 00) that only digit boundaries delimit: no digit (nor a decimal point
    # after one) before it, anything after
    "phone": (
        r"(?<![\w+])(?:"
        r"\+\d(?:[ .-]?\(?\d\)?){7,14}"
        r"|0[1-9](?:[ .-]?\d){8,10}"
        r"|\(?[2-9]\d{2}\)?[ .-]?[2-9]\d{2}[ .-]?\d{4}"
        r")(?![\w])"
        r"|(?<![\d+])(?<!\d[.,])(?:0[1-9](?:[ .-]?\d){8,9}|(?:\+|00)[1-9](?:[ .-]?\d){7,13})"
    ),
    # Visa, Mastercard, Amex, Discover, Diners, JCB numbers, optionally grouped by spaces/dashes
    "credit_card": (
        r"(?<![\w])(?:"
        r"4\d{3}(?:[ -]?\d{4}){2}[ -]?\d{1,4}(?:\d{3})?"
        r"|(?:5[1-5]\d{2}|2[2-7]\d{2})(?:[ -]?\d{4}){3}"
        r"|3[47]\d{2}[ -]?\d{6}[ -]?\d{5}"
        r"|6(?:011|5\d{2})(?:[ -]?\d{4}){3}"
        r"|3(?:0[0-5]|[68]\d)\d[ -]?\d{6}[ -]?\d{4}"
        r"|35\d{2}(?:[ -]?\d{4}){3}"
        r")(?![\w])"
    ),
}
LEAK_ENTITY = {"email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "credit_card": "CREDIT_CARD"}
"""The presidio entity type a leak pattern stands for (its replacement uses that type's operator)."""
_LEAK_RES = {name: re.compile(rx) for name, rx in LEAK_PATTERNS.items()}


def leak_results(text: str, names: Sequence[str]) -> list:
    from presidio_analyzer import RecognizerResult

    hits = []
    for name in names:
        for m in _LEAK_RES[name].finditer(text):
            hits.append(RecognizerResult(LEAK_ENTITY[name], m.start(), m.end(), 1.0))
    return hits


def find_leaks(text: str, names: Sequence[str] = tuple(LEAK_PATTERNS)) -> dict[str, int]:
    """How many matches each leak pattern has in `text` (empty when clean)."""
    counts = {name: len(_LEAK_RES[name].findall(text)) for name in names}
    return {k: v for k, v in counts.items() if v}

