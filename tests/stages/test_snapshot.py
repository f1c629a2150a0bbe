"""snapshot: the feedback store and the production pointer as files DVC can hash; collect reads the feedback."""

import json

import pandas as pd

from stages import collect, snapshot
from tuneline.deploy.feedback import FeedbackStore, default_url
from tuneline.params import ClassificationParams, CollectParams, FeedbackParams, Paths
from tuneline.data.records import read_json
from tuneline.deploy.registry import Registry


def _paths(tmp_path) -> Paths:
    return Paths(**{k: str(tmp_path / k) for k in ("collected", "rejects", "metrics", "models", "feedback",
                                                    "registry", "cache")})


def test_feedback_round_trip_into_collect(tmp_path):
    paths = _paths(tmp_path)
    first = snapshot.run(FeedbackParams(), paths)  # no store yet: empty snapshot, null production
    assert first["items"] == 0 and (tmp_path / "feedback" / "snapshot.jsonl").read_text() == ""
    assert read_json(tmp_path / "models" / "production.json")["version"] is None

    with FeedbackStore(default_url(paths.feedback)) as store:
        store.add(kind="label", text="free entry <PHONE_NUMBER> win", label="spam")
        store.add(kind="rating", text="see you at lunch", predicted="ham", rating="good")
        store.add(kind="rating", text="call me", predicted="spam", rating="bad")
        store.add(kind="label", text="hello there", label="eggs")  # collect quarantines it, with a reason
    m = snapshot.run(FeedbackParams(), paths)
    assert m["rows_out"] == 3 and m["skipped"]["bad_ratings"] == 1
    assert read_json(tmp_path / "metrics" / "snapshot.json")["max_id"] == 4

    (tmp_path / "a.csv").write_text("text,label\nok see you,ham\nwin cash,spam\n")
    sms = {"name": "sms", "source": {"kind": "local", "path": str(tmp_path / "a.csv")}}
    p = CollectParams.model_validate({"datasets": [sms], "feedback": True})
    out = collect.run(p, ClassificationParams(labels=["ham", "spam"]), paths)
    assert out["sources"]["feedback"]["rows_read"] == 3 and out["sources"]["feedback"]["rows_rejected"] == 1
    records = pd.read_parquet(tmp_path / "collected" / "records.parquet")
    fb = records[records["source"] == "feedback"]
    assert sorted(fb["text"]) == ["free entry <PHONE_NUMBER> win", "see you at lunch"]
    rejects = pd.read_parquet(tmp_path / "rejects" / "collect.parquet")
    assert "eggs" in rejects["reason"].iloc[0]

    off = CollectParams.model_validate({"datasets": p.model_dump()["datasets"]})
    assert "feedback" not in collect.run(off, ClassificationParams(labels=["ham", "spam"]), paths)["sources"]


def test_production_pointer_follows_the_registry(tmp_path):
    paths = _paths(tmp_path)
    (tmp_path / "cand" / "finetuned").mkdir(parents=True)
    (tmp_path / "cand" / "finetuned" / "w").write_text("w")
    Registry(paths.registry).promote(tmp_path / "cand", train_ids={"a"}, record={"finetuned_sha256": "abc"},
                                     test=pd.DataFrame({"id": ["x"], "text": ["t"], "label": ["ham"]}))
    snapshot.run(FeedbackParams(), paths)
    first = (tmp_path / "models" / "production.json").read_bytes()
    pointer = json.loads(first)
    assert pointer["version"] == "v0001" and pointer["finetuned_sha256"] == "abc" and pointer["regression_sha256"]
    snapshot.run(FeedbackParams(), paths)
    assert (tmp_path / "models" / "production.json").read_bytes() == first  # same state, same bytes
