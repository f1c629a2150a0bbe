"""Conversation data for the generation task: (history, next turn) examples with a conversation id.

Two readers, both quarantining bad records with a reason (rows in = examples out + rejected):
  - `read_chitchat(path)`: the chitchat dataset (BYU-PCCL, MIT), `chitchat_dataset/dataset.json`
    from PyPI `chitchat-dataset==0.9.0` (`CHITCHAT_SOURCE`, fetched with `tuneline.data.assets.resolve_pypi`).
    Each conversation `{messages: [[{text, sender, timestamp} of one speaker], ...], ...}` gives one example per turn
    after the first: history = the turns before it, response = that turn.
  - `read_bitext(path)`: a CSV with `instruction` -> `response` (the bitext customer-support set).
`conversation_id` groups the examples of one conversation, so a split can keep it whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tuneline.params import PypiSource

CHITCHAT_SOURCE = PypiSource(
    package="chitchat-dataset", version="0.9.0", member="chitchat_dataset/dataset.json",
    sha256="d2a5d0bf6acf354fef51f3af39cbece2220d3b8f6086b658c3d335105798312a",
)

# reject reasons (constants shared with later stages and tests)
EMPTY_RESPONSE = "empty_response"
EMPTY_PROMPT = "empty_prompt"
MISSING_FIELD = "missing_field"
PROMPT_TOO_LONG = "prompt_too_long"
NO_REPLY = "no_reply"  # a conversation with one speaker only (3,150 of chitchat's 7,168)


@dataclass
class Example:
    conversation_id: str
    history: list[dict]
    """Chat messages before the response: [{"role": "user"|"assistant", "content": str}, ...]."""
    response: str
    source_row: int
    """Index of the record (conversation or CSV row) the example came from."""


@dataclass
class Reject:
    source_row: int
    reason: str
    detail: str = ""


@dataclass
class ReadResult:
    examples: list[Example] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    records_in: int = 0
    """Candidate examples seen (one per response turn, or one per record that could not be split)."""

    def check(self) -> None:
        if self.records_in != len(self.examples) + len(self.rejects):
            raise AssertionError(f"counts do not reconcile: {self.records_in} in, "
                                 f"{len(self.examples)} out, {len(self.rejects)} rejected")

    def rejects_frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.rejects], columns=["source_row", "reason", "detail"])


def _roles(n_history: int) -> list[str]:
    """Roles of the history turns, counted back from the response (assistant): user, assistant, ..."""
    return ["user" if (n_history - i) % 2 == 1 else "assistant" for i in range(n_history)]


def conversation_examples(conv_id: str, turns: list[str], row: int, max_prompt_chars: int,
                          out: ReadResult, max_history_turns: int | None = None) -> None:
    """Append one example per turn after the first (quarantining empty or over-long ones) to `out`."""
    for i in range(1, len(turns)):
        out.records_in += 1
        response = turns[i].strip()
        history_turns = turns[max(0, i - max_history_turns):i] if max_history_turns else turns[:i]
        if not response:
            out.rejects.append(Reject(row, EMPTY_RESPONSE, f"{conv_id} turn {i}"))
            continue
        if not any(t.strip() for t in history_turns):
            out.rejects.append(Reject(row, EMPTY_PROMPT, f"{conv_id} turn {i}"))
            continue
        if sum(len(t) for t in history_turns) > max_prompt_chars:
            out.rejects.append(Reject(row, PROMPT_TOO_LONG, f"{conv_id} turn {i}: over {max_prompt_chars} chars"))
            continue
        roles = _roles(len(history_turns))
        history = [{"role": r, "content": t.strip()} for r, t in zip(roles, history_turns)]
        out.examples.append(Example(conv_id, history, response, row))


def _text(message) -> str:
    """A chitchat message is {"text", "timestamp", "sender"}; plain strings are accepted too."""
    return str(message.get("text", "")) if isinstance(message, dict) else str(message)


def read_chitchat(path: str | Path, max_prompt_chars: int = 2000, max_history_turns: int | None = 4) -> ReadResult:
    """Read chitchat's dataset.json (a dict id -> conversation, or a list of conversations).

    The history is the last `max_history_turns` turns (None: all; whole histories run to thousands of
    characters: with None and 2,000 chars, 71,545 of 134,719 candidates are over-long)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    items = list(data.items()) if isinstance(data, dict) else [(str(i), c) for i, c in enumerate(data)]
    out = ReadResult()
    for row, (conv_id, conv) in enumerate(items):
        messages = conv.get("messages") if isinstance(conv, dict) else None
        if not isinstance(messages, list):
            out.records_in += 1
            out.rejects.append(Reject(row, MISSING_FIELD, f"{conv_id}: no 'messages' list"))
            continue
        # a turn = the consecutive messages of one speaker
        turns = [" ".join(_text(m) for m in t) if isinstance(t, list) else _text(t) for t in messages]
        if len(turns) < 2:
            out.records_in += 1
            out.rejects.append(Reject(row, NO_REPLY, f"{conv_id}: fewer than 2 turns"))
            continue
        conversation_examples(str(conv_id), turns, row, max_prompt_chars, out, max_history_turns)
    out.check()
    return out


def read_bitext(path: str | Path, prompt_column: str = "instruction", response_column: str = "response",
                max_prompt_chars: int = 2000) -> ReadResult:
    """Read an instruction -> response CSV: one single-turn example per row, id = the row number."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    out = ReadResult(records_in=len(df))
    missing = [c for c in (prompt_column, response_column) if c not in df.columns]
    if missing:
        out.rejects = [Reject(i, MISSING_FIELD, f"column(s) {missing} not in {list(df.columns)}") for i in range(len(df))]
        out.check()
        return out
    for i, (prompt, response) in enumerate(zip(df[prompt_column], df[response_column])):
        prompt, response = prompt.strip(), response.strip()
        if not response:
            out.rejects.append(Reject(i, EMPTY_RESPONSE))
        elif not prompt:
            out.rejects.append(Reject(i, EMPTY_PROMPT))
        elif len(prompt) > max_prompt_chars:
            out.rejects.append(Reject(i, PROMPT_TOO_LONG, f"{len(prompt)} chars > {max_prompt_chars}"))
        else:
            out.examples.append(Example(f"bitext-{i}", [{"role": "user", "content": prompt}], response, i))
    out.check()
    return out
