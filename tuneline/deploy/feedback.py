"""The feedback store: what users said about predictions, kept in SQLite (WAL) and exported.

Two kinds of feedback, one table:
  label   a text with its correct label (a correction, or a new labelled example)
  rating  a prediction rated `good` or `bad` (the predicted label and the model version with it)

Every post carries a `key` (the client's idempotency key, or a fresh uuid), unique in the table:
a client that retries a post it is unsure about stores it once, and the second answer says
`duplicate`. Texts arrive here already anonymized (the API does that before calling `add`).

Identifiers are not anonymized, so they must not be able to carry personal data: a key (and the
`model_version` a client sends) is either a UUID (any version, with or without hyphens) or 1-64
characters of ASCII letters, digits and `_ . : -` that starts with a letter and holds at most 6
digits in all (`check_identifier`). So no e-mail address (no `@`), no phone, card or account
number (7+ digits, however they are grouped), no spaces; `ticket-4711`, `fb.2026.w49`, `v0007` and
`uuid.uuid4()` pass. A pattern cannot tell a name from a word: clients must not build keys from names.

The store is opened from a URL: `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`
(the same spelling as SQLAlchemy). SQLite runs in WAL mode, so readers (the export) never block
writers (the API), and writers queue on a busy timeout instead of failing.

`export_snapshot` writes the rows that can train a model as jsonl (`text`, `label`, plus where
they came from), ordered by id, so the same store gives the same bytes: DVC sees new feedback
as a changed input of collect, and dvc.lock records which snapshot each model was trained on.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tuneline.data.records import write_atomic
from tuneline.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT    NOT NULL UNIQUE,
    created_at    TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('label', 'rating')),
    text          TEXT    NOT NULL,
    label         TEXT,
    predicted     TEXT,
    rating        TEXT    CHECK (rating IS NULL OR rating IN ('good', 'bad')),
    model_version TEXT,
    pii_count     INTEGER NOT NULL DEFAULT 0
);
"""
COLUMNS = ["id", "key", "created_at", "kind", "text", "label", "predicted", "rating", "model_version", "pii_count"]


class FeedbackError(UserError, ValueError):
    """A bad store URL or a feedback item that breaks the schema."""


MAX_ID_LENGTH = 64
MAX_ID_DIGITS = 6
"""Most digits an identifier may hold: fewer than any phone number (7+), card or account number."""
IDENTIFIER_RULE = (f"a UUID, or 1-{MAX_ID_LENGTH} characters of ASCII letters, digits and _ . : - that start with a "
                   f"letter and hold at most {MAX_ID_DIGITS} digits (so no e-mail, phone, card or account number)")
_UUID_RX = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[1-8][0-9a-fA-F]{3}-?[89abAB][0-9a-fA-F]{3}-?[0-9a-fA-F]{12}"
ID_SCHEMA_PATTERN = rf"^(?:{_UUID_RX}|[A-Za-z][A-Za-z0-9_.:-]{{0,{MAX_ID_LENGTH - 1}}})$"
"""The rule's shape as a JSON-schema pattern (the API's OpenAPI schema); the digit count is checked apart."""
_ID_CHARS = re.compile(r"[A-Za-z0-9_.:-]")
_UUID = re.compile(_UUID_RX)


def check_identifier(value: str, what: str = "key") -> str:
    """`value` when it is a safe identifier (see the module docstring), else a FeedbackError that says
    why without echoing it (it may be personal data)."""
    if _UUID.fullmatch(value):
        return value
    if not value or len(value) > MAX_ID_LENGTH:  # (checked first: a 1 MB key is not scanned)
        why = "is empty" if not value else f"has {len(value)} characters"
    elif (bad := next((i for i, ch in enumerate(value) if not _ID_CHARS.fullmatch(ch)), None)) is not None:
        why = f"has a character that is not allowed (U+{ord(value[bad]):04X} at {bad})"
    elif not value[0].isalpha():
        why = "does not start with a letter"
    else:
        digits = sum(c.isdigit() for c in value)
        why = f"has {digits} digits" if digits > MAX_ID_DIGITS else None
    if why:
        raise FeedbackError(f"{what} {why}: an identifier is stored as sent, so it must be {IDENTIFIER_RULE}")
    return value


@dataclass(frozen=True)
class Stored:
    id: int
    duplicate: bool
    """True when an item with the same key was already stored (nothing new was written)."""


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///path` URL (three slashes + relative path, four + absolute)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        scheme = url.split(":", 1)[0] if ":" in url else url
        raise FeedbackError(f"feedback.url {url!r}: only sqlite:///path is supported (got scheme {scheme!r}); "
                            "a server database needs a FeedbackStore for that driver")
    rest = url[len(prefix):]
    if not rest or rest == ":memory:":
        raise FeedbackError(f"feedback.url {url!r}: name a file; an in-memory store would lose the feedback")
    return Path(rest)


def default_url(feedback_dir: str | Path) -> str:
    return f"sqlite:///{Path(feedback_dir) / 'feedback.db'}"


class FeedbackStore:
    """A thread-safe handle on the SQLite store. Writes are serialized in-process by a lock and
    across processes by SQLite's own lock (waiting up to `busy_timeout_ms`)."""

    def __init__(self, url: str, busy_timeout_ms: int = 10_000, create: bool = True):
        self.url = url
        self.path = sqlite_path(url)
        if not create and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no feedback store (nothing was posted yet)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise FeedbackError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); is it on a network disk?")
        self._db.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL mode
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "FeedbackStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, *, kind: str, text: str, label: str | None = None, predicted: str | None = None,
            rating: str | None = None, model_version: str | None = None, pii_count: int = 0,
            key: str | None = None) -> Stored:
        """Store one item once; a second add with the same key returns the first id, duplicate=True."""
        if kind == "label" and not label:
            raise FeedbackError("a `label` item needs the correct label")
        if kind == "rating" and (rating not in ("good", "bad") or not predicted):
            raise FeedbackError("a `rating` item needs the predicted label and a rating of good or bad")
        if kind not in ("label", "rating"):
            raise FeedbackError(f"kind must be label or rating, got {kind!r}")
        key = uuid.uuid4().hex if key is None else check_identifier(key, "key")
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO feedback (key, created_at, kind, text, label, predicted, rating, model_version, pii_count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING RETURNING id",
                (key, now, kind, text, label, predicted, rating, model_version, int(pii_count)))
            row = cur.fetchone()
            cur.close()
            if row is not None:
                return Stored(id=row[0], duplicate=False)
            (existing,) = self._db.execute("SELECT id FROM feedback WHERE key = ?", (key,)).fetchone()
            return Stored(id=existing, duplicate=True)

    def rows(self) -> list[dict]:
        """Every item, oldest first (one consistent read)."""
        with self._lock:
            cur = self._db.cursor()
            cur.row_factory = sqlite3.Row  # rows by column name: the SQL stays a constant
            cur.execute("SELECT * FROM feedback ORDER BY id")
            return [{c: r[c] for c in COLUMNS} for r in cur.fetchall()]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]


def training_rows(items: list[dict], ratings_as_labels: bool = True) -> tuple[list[dict], dict]:
    """The items that can train a model, as {text, label, ...}, and counts of what was left out."""
    out, skipped = [], {"bad_ratings": 0, "good_ratings_off": 0}
    for it in items:
        if it["kind"] == "label":
            label = it["label"]
        elif it["rating"] == "good" and ratings_as_labels:
            label = it["predicted"]
        else:
            skipped["bad_ratings" if it["rating"] == "bad" else "good_ratings_off"] += 1
            continue
        out.append({"text": it["text"], "label": label, "feedback_id": it["id"], "kind": it["kind"],
                    "created_at": it["created_at"], "model_version": it["model_version"]})
    return out, skipped


def export_snapshot(url: str, path: str | Path, ratings_as_labels: bool = True,
                    busy_timeout_ms: int = 10_000) -> dict:
    """Write the trainable feedback as jsonl (ordered by id) and return counts.

    A store that does not exist yet gives an empty snapshot: a fresh clone's `dvc repro` works.
    """
    db = sqlite_path(url)
    items: list[dict] = []
    if db.exists():
        with FeedbackStore(url, busy_timeout_ms=busy_timeout_ms, create=False) as store:
            items = store.rows()
    rows, skipped = training_rows(items, ratings_as_labels)
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    by_kind = {k: sum(1 for it in items if it["kind"] == k) for k in ("label", "rating")}
    return {
        "store": str(db),
        "store_exists": db.exists(),
        "items": len(items),
        "by_kind": by_kind,
        "rows_out": len(rows),
        "skipped": skipped,
        "max_id": max((it["id"] for it in items), default=0),
        "labels": {lab: sum(1 for r in rows if r["label"] == lab) for lab in sorted({r["label"] for r in rows})},
    }
