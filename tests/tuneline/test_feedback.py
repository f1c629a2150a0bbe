import json
import sqlite3
import threading

import pytest

from tuneline.deploy.feedback import FeedbackError, FeedbackStore, default_url, export_snapshot, sqlite_path


def test_store_is_wal_and_keys_are_stored_once(tmp_path):
    url = default_url(tmp_path / "fb")
    with FeedbackStore(url) as store:
        a = store.add(kind="label", text="win a prize <PHONE_NUMBER>", label="spam", key="k1")
        again = store.add(kind="label", text="something else entirely", label="ham", key="k1")
        b = store.add(kind="rating", text="see you at home", predicted="ham", rating="good")
        assert (a.duplicate, again.duplicate, b.duplicate) == (False, True, False)
        assert again.id == a.id and store.count() == 2
        assert store.rows()[0]["text"] == "win a prize <PHONE_NUMBER>"  # the first post wins
    db = sqlite3.connect(sqlite_path(url))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_items_and_urls_are_errors(tmp_path):
    with FeedbackStore(default_url(tmp_path)) as store:
        with pytest.raises(FeedbackError, match="needs the correct label"):
            store.add(kind="label", text="x")
        with pytest.raises(FeedbackError, match="good or bad"):
            store.add(kind="rating", text="x", predicted="ham", rating="meh")
        assert store.count() == 0
    with pytest.raises(FeedbackError, match="only sqlite"):
        sqlite_path("postgresql://db/feedback")
    with pytest.raises(FeedbackError, match="in-memory"):
        sqlite_path("sqlite:///:memory:")


def test_concurrent_writers_from_threads_and_connections(tmp_path):
    """Two stores on one file (two server processes) plus threads: every add lands once."""
    url = default_url(tmp_path)
    stores = [FeedbackStore(url, busy_timeout_ms=20_000), FeedbackStore(url, busy_timeout_ms=20_000)]
    ids, errors = [], []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                ids.append(stores[n % 2].add(kind="label", text=f"t{n}-{i}", label="ham", key=f"k{n}-{i}").id)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ids) == len(set(ids)) == 200 == stores[0].count()
    for s in stores:
        s.close()


def test_export_snapshot_is_deterministic_and_filters_ratings(tmp_path):
    url = default_url(tmp_path / "fb")
    out = tmp_path / "snap" / "snapshot.jsonl"
    empty = export_snapshot(url, out)  # no store yet: an empty snapshot, no store created
    assert empty["store_exists"] is False and out.read_text() == "" and not sqlite_path(url).exists()
    with FeedbackStore(url) as store:
        store.add(kind="label", text="claim your cash", label="spam")
        store.add(kind="rating", text="dinner at home", predicted="ham", rating="good")
        store.add(kind="rating", text="free entry now", predicted="ham", rating="bad")
    m = export_snapshot(url, out)
    first = out.read_bytes()
    assert export_snapshot(url, out) == m and out.read_bytes() == first
    rows = [json.loads(x) for x in first.decode().splitlines()]
    assert [(r["text"], r["label"], r["kind"]) for r in rows] == [("claim your cash", "spam", "label"),
                                                                  ("dinner at home", "ham", "rating")]
    assert m["items"] == 3 and m["rows_out"] == 2 and m["skipped"]["bad_ratings"] == 1 and m["max_id"] == 3
    m2 = export_snapshot(url, out, ratings_as_labels=False)
    assert m2["rows_out"] == 1 and m2["skipped"]["good_ratings_off"] == 1


def test_the_store_refuses_keys_that_could_be_personal_data(tmp_path):
    from tuneline.deploy.feedback import check_identifier

    with FeedbackStore(default_url(tmp_path)) as store:
        for key in ("07700900123", "jane@example.com", "ref-0770-090-0123", ""):
            with pytest.raises(FeedbackError, match="at most 6 digits"):
                store.add(kind="label", text="x", label="ham", key=key)
        assert store.count() == 0
        assert store.add(kind="label", text="x", label="ham", key="ticket-4711").duplicate is False
    assert check_identifier("v0007", "model_version") == "v0007"
