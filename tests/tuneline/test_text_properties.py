"""Property-based checks of the text rules on arbitrary unicode (hypothesis).

Lone surrogates, combining marks, bidi controls, NUL, full-width forms and very long words must
never crash the clean stage's rules, and what comes out holds the invariants later stages rely on.
"""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from tuneline.data.text import clean_text, dedup_key

# every code point, surrogates included, plus the awkward ones drawn more often
AWKWARD = st.sampled_from(["\ud800", "\udfff", "\x00", "\u0301", "\u202e", "\u200b", "\ufeff", "\uff21", "\u00df",
                           "<b>", "&amp;", "&#0;", "&lt;PERSON&gt;", "<PERSON>", "\r\n", "\t", "x" * 500])
TEXT = st.lists(st.one_of(st.characters(), AWKWARD), max_size=60).map("".join)
FAST = settings(max_examples=300, deadline=None)


@FAST
@given(TEXT, st.sampled_from(["NFKC", "NFC"]), st.booleans())
def test_clean_text_never_fails_and_leaves_no_control_or_surrogate(text, form, markup):
    out = clean_text(text, form=form, markup=markup)
    assert isinstance(out, str)
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in out)
    assert out == out.strip() and "  " not in out
    out.encode("utf-8")  # writable to parquet / JSON as UTF-8


@FAST
@given(TEXT)
def test_placeholders_survive_markup_stripping(text):
    assert "<PERSON>" in clean_text(f"{text} <PERSON> {text}")


@FAST
@given(TEXT)
def test_dedup_key_ignores_case_width_and_spacing(text):
    key = dedup_key(text)
    assert dedup_key(f"  {text.upper()}\t") == dedup_key(text.upper())
    assert dedup_key(unicodedata.normalize("NFKC", text)) == key
    assert key == key.strip() and "  " not in key
