"""Text normalization: the cleaning rules and the key that decides which texts are 'the same'."""

from __future__ import annotations

import html
import re
import unicodedata

_TAG = re.compile(r"<\s*/?\s*[A-Za-z][A-Za-z0-9:-]*(?:\s+[^<>]*?)?\s*/?\s*>")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_SCRIPT = re.compile(r"<\s*(script|style)\b[^>]*>.*?<\s*/\s*\1\s*>", re.S | re.I)
_SPACE = re.compile(r"\s+")
# Our own anonymization placeholders look like tags (<PERSON>); never strip those.
_PLACEHOLDER = re.compile(r"^<\s*[A-Z][A-Z0-9_]*\s*>$")


def strip_markup(text: str) -> str:
    """Remove HTML/XML tags, comments, script/style blocks; decode entities (&amp; -> &)."""
    text = _SCRIPT.sub(" ", text)
    text = _COMMENT.sub(" ", text)
    text = _TAG.sub(lambda m: m.group(0) if _PLACEHOLDER.match(m.group(0)) else " ", text)
    return html.unescape(text)


def strip_control(text: str) -> str:
    """Drop control and format characters (C0/C1, zero-width, BOM); tabs/newlines become spaces."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\v\f":
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            out.append(ch)
    return "".join(out)


def fold_whitespace(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def clean_text(text: str, form: str = "NFKC", markup: bool = True) -> str:
    """The clean stage's rules, in order: unicode form, markup, control chars, whitespace."""
    text = unicodedata.normalize(form, text)
    if markup:
        text = strip_markup(text)
    return fold_whitespace(strip_control(text))


def dedup_key(text: str) -> str:
    """Texts with the same key are 'identical after normalization' and must share a split."""
    return fold_whitespace(unicodedata.normalize("NFKC", text).casefold())
