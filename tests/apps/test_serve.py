"""The API on a real uvicorn server on 127.0.0.1, with a tiny real model, a real presidio engine
(pattern recognizers) and a real SQLite store."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tuneline.deploy.feedback import FeedbackStore, default_url, sqlite_path
from tuneline.params import CleanParams, ServeParams
from tuneline.deploy.predictor import Predictor

LABELS = ["ham", "spam"]
TOKEN = "s3cret-token"


def build_model_folder(base_dir: Path, out: Path, temperature: float = 1.5, seed: int = 0) -> Path:
    """finetuned/ (the train stage's format) + calibrated/ (the calibrate stage's format)."""
    import torch

    from tuneline.evaluate.calibration import Calibrator, save_calibrated
    from tuneline.train.models import build_classifier, save_finetuned

    torch.manual_seed(seed)
    model, tok = build_classifier(base_dir, LABELS)
    meta = {"method": "full", "labels": LABELS, "max_length": 64, "base": str(base_dir),
            "base_source": {"kind": "local", "path": str(base_dir)}}
    save_finetuned(model, tok, out / "finetuned", meta)
    calibrator = Calibrator("temperature", 2, temperature=temperature)
    save_calibrated(out / "calibrated", calibrator, out / "finetuned", LABELS)
    return out


class Server:
    """uvicorn in a thread on an ephemeral loopback port."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def anonymize():
    from tuneline.deploy.serving import build_anonymizer

    # presidio's pattern recognizers (no spaCy NER: PERSON/LOCATION need it, and it costs seconds)
    return build_anonymizer(CleanParams(spacy_model="none", pii_entities=["EMAIL_ADDRESS", "PHONE_NUMBER",
                                                                          "CREDIT_CARD", "URL"]))


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir, anonymize):
    from apps.serve import create_app

    root = tmp_path_factory.mktemp("serve")
    predictor = Predictor.load(build_model_folder(tiny_model_dir, root / "model"), "v0007")
    store = FeedbackStore(default_url(root / "feedback"))
    p = ServeParams(max_batch=8, max_chars=200)
    app = create_app(predictor=predictor, store=store, anonymize=anonymize, p=p, token=TOKEN,
                     production_version=lambda: "v0008")
    with Server(app) as url:
        yield {"url": url, "store": store, "p": p, "predictor": predictor}
    store.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_health_names_the_model(api):
    r = httpx.get(api["url"] + "/health")
    assert r.status_code == 200
    h = r.json()
    assert h["model_version"] == "v0007" and h["calibrated"] is True and h["labels"] == LABELS
    assert h["production_version"] == "v0008" and h["stale"] is True


def test_predict_returns_calibrated_probabilities(api):
    texts = ["free cash prize claim now", "see you at home later", "ok"]
    r = httpx.post(api["url"] + "/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "v0007" and len(body["predictions"]) == 3
    for pred in body["predictions"]:
        assert abs(sum(pred["probs"].values()) - 1) < 1e-6 and pred["label"] in LABELS
        assert pred["confidence"] == max(pred["probs"].values())
    # the same numbers as the library: logits / T through softmax
    want = api["predictor"].predict_proba(texts)
    got = np.array([[p["probs"][lab] for lab in LABELS] for p in body["predictions"]])
    assert np.allclose(got, want, atol=1e-6)


def test_limits_and_malformed_requests_are_clear_4xx(api):
    url, p = api["url"], api["p"]
    too_many = httpx.post(url + "/predict", json={"texts": ["hi"] * (p.max_batch + 1)})
    assert too_many.status_code == 413 and "max_batch = 8" in too_many.json()["detail"]
    too_long = httpx.post(url + "/predict", json={"texts": ["ok", "x" * (p.max_chars + 1)]})
    assert too_long.status_code == 413 and "texts[1]: 201 characters" in too_long.json()["detail"]
    huge = httpx.post(url + "/predict", content=b'{"texts": ["' + b"a" * 200_000 + b'"]}',
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "request body over" in huge.json()["detail"]
    bad_json = httpx.post(url + "/predict", content=b'{"texts": ["a",', headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["detail"]
    empty = httpx.post(url + "/predict", json={"texts": []})
    assert empty.status_code == 422 and empty.json()["detail"][0]["field"] == "texts"
    wrong_type = httpx.post(url + "/predict", json={"texts": "just one string"})
    assert wrong_type.status_code == 422
    unknown = httpx.post(url + "/predict", json={"texts": ["a"], "temperature": 2})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "temperature"
    blank = httpx.post(url + "/predict", json={"texts": ["   "]})
    assert blank.status_code == 422 and "empty text" in blank.json()["detail"]


def test_feedback_needs_the_token(api):
    url = api["url"]
    before = api["store"].count()
    item = {"text": "win cash now", "label": "spam"}
    missing = httpx.post(url + "/feedback", json=item)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(url + "/feedback", json=item, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong bearer token" in wrong.json()["detail"]
    basic = httpx.post(url + "/feedback", json=item, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    reload_ = httpx.post(url + "/reload", headers={"Authorization": "Bearer nope"})
    assert reload_.status_code == 401
    assert api["store"].count() == before  # nothing stored without the token


def test_feedback_is_anonymized_validated_and_idempotent(api):
    url, store = api["url"], api["store"]
    text = "call me on +44 7700 900123 or mail jane.doe@example.com"
    r = httpx.post(url + "/feedback", json={"text": text, "label": "ham", "key": "fb-1"}, headers=AUTH)
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    assert r.json()["pii_replaced"] >= 2 and r.json()["duplicate"] is False
    again = httpx.post(url + "/feedback", json={"text": text, "label": "ham", "key": "fb-1"}, headers=AUTH)
    assert again.status_code == 200 and again.json() == {**r.json(), "duplicate": True}
    rating = httpx.post(url + "/feedback", json={"text": "see you", "predicted": "ham", "rating": "good"}, headers=AUTH)
    assert rating.status_code == 201 and rating.json()["kind"] == "rating"

    stored = {row["id"]: row for row in store.rows()}
    assert "7700" not in stored[fid]["text"] and "example.com" not in stored[fid]["text"]
    assert "<PHONE_NUMBER>" in stored[fid]["text"] and "<EMAIL_ADDRESS>" in stored[fid]["text"]
    assert stored[fid]["model_version"] == "v0007"
    raw = sqlite3.connect(sqlite_path(store.url)).execute("SELECT group_concat(text, ' ') FROM feedback").fetchone()[0]
    assert "jane.doe" not in raw  # the raw text never reached the database

    for body, status, words in [
        ({"text": "x", "label": "eggs"}, 422, "not one of"),
        ({"text": "x"}, 422, "needs `label`"),
        ({"text": "x", "label": "ham", "rating": "good", "predicted": "ham"}, 422, "not both"),
        ({"text": "x", "predicted": "ham", "rating": "meh"}, 422, "rating"),
        ({"text": "x" * 201, "label": "ham"}, 413, "max_chars"),
        ({"text": "x", "label": "ham", "key": "bad key!"}, 422, "key"),
    ]:
        r = httpx.post(url + "/feedback", json=body, headers=AUTH)
        assert r.status_code == status, (body, r.text)
        assert words in json.dumps(r.json()), r.text


def test_feedback_off_without_a_token(tmp_path, tiny_model_dir):
    from fastapi.testclient import TestClient

    from apps.serve import create_app

    predictor = Predictor.load(build_model_folder(tiny_model_dir, tmp_path / "m"), "v1")
    with FeedbackStore(default_url(tmp_path)) as store:
        app = create_app(predictor=predictor, store=store, anonymize=lambda t: [(x, 0) for x in t],
                         p=ServeParams(), token=None)
        r = TestClient(app).post("/feedback", json={"text": "a", "label": "ham"}, headers=AUTH)
        assert r.status_code == 503 and "TUNELINE_FEEDBACK_TOKEN" in r.json()["detail"]


def test_concurrent_feedback_every_accepted_post_stored_once(api):
    """Bounded load test on loopback: 16 clients x 20 posts, each client retrying 5 of its posts
    with the same key (as a client that lost the answer would)."""
    url, store = api["url"], api["store"]
    before = {r["key"] for r in store.rows()}
    clients, per_client, retried = 16, 20, 5

    def client(c: int) -> list[tuple[str, int, int]]:
        out = []
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            for i in range(per_client):
                key = f"load-{c}-{i}"
                body = {"text": f"message {c} {i} call 07700 900{c:03d}", "label": LABELS[(c + i) % 2], "key": key}
                r = http.post("/feedback", json=body)
                out.append((key, r.status_code, r.json().get("id", -1)))
                if i < retried:
                    r2 = http.post("/feedback", json=body)
                    out.append((key, r2.status_code, r2.json().get("id", -1)))
        return out

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(client, range(clients)) for x in part]
    seconds = time.monotonic() - start
    accepted = {key: fid for key, status, fid in results if status == 201}
    duplicates = [(key, fid) for key, status, fid in results if status == 200]
    assert all(status in (200, 201) for _, status, _ in results)
    assert len(accepted) == clients * per_client and len(duplicates) == clients * retried
    assert all(accepted[key] == fid for key, fid in duplicates)  # a retry answers the first id
    rows = [r for r in store.rows() if r["key"] not in before]
    assert len(rows) == len(accepted)  # accepted == stored
    assert {r["key"]: r["id"] for r in rows} == accepted  # each exactly once, under the id we were told
    assert not any("900" in r["text"] for r in rows)  # phone numbers anonymized under load
    print(f"\n/feedback load: {len(results)} posts from {clients} clients in {seconds:.2f} s, "
          f"{len(accepted)} accepted, {len(rows)} stored, {len(duplicates)} duplicates answered")


def test_a_compressed_variant_loads_for_serving(tmp_path, tiny_model_dir):
    """`python -m apps.serve --model models/compressed/<variant>`: an int8 variant with its calibrator."""
    from tuneline.evaluate.calibration import Calibrator
    from tuneline.compress.storage import save_variant
    from tuneline.train.models import load_finetuned
    from tuneline.compress.quantization import quantize_int8
    from tuneline.deploy.serving import load_model

    ft = load_finetuned(build_model_folder(tiny_model_dir, tmp_path / "m") / "finetuned")
    info = {"name": "int8", "kind": "quantize", "source": "teacher", "labels": LABELS, "max_length": 64,
            "format": "int8", "quantization": {"per_channel": True, "embeddings": True}}
    save_variant(quantize_int8(ft.model), ft.tokenizer, tmp_path / "int8", info)
    Calibrator("temperature", 2, temperature=2.0).save(tmp_path / "int8" / "calibrator")
    pred = load_model(tmp_path / "int8", "int8")
    probs = pred.predict_proba(["free prize claim now", "see you at home"])
    assert pred.calibrated and pred.labels == LABELS and probs.shape == (2, 2)
    assert np.allclose(probs.sum(axis=1), 1)
    assert load_model(tmp_path / "m", "v1").calibrated  # a plain model folder still loads


# --------------------------------------------------------------------------- hardening (issue 20)
def _raw(url: str, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    """POST `body` as JSON with \\uXXXX escapes, as any client may send it: a lone surrogate
    ("\\ud800") goes over the wire as the 6 ASCII characters `\\ud800` (httpx's json= cannot encode it)."""
    return httpx.post(url + path, content=json.dumps(body).encode(), timeout=30,
                      headers={"content-type": "application/json", **(headers or {})})


def test_odd_unicode_is_a_clear_4xx_or_an_answer_never_a_5xx(api):
    url = api["url"]
    r = _raw(url, "/predict", {"texts": ["ok", "abc\ud800"]})
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["field"] == "texts.1" and "lone surrogate U+D800 at character 3" in err["error"]
    odd = ["e\u0301\u0301\u0301" * 20,  # stacked combining marks
           "\u202eevil\u202c \u2066isolate\u2069",  # bidi overrides and isolates
           "nul\x00byte \x01\x7f",  # NUL and other control characters
           "\u200b\u200d\ufeff",  # only zero-width characters and a BOM (not whitespace to str.strip)
           "\U0001f600\U0001f1ec\U0001f1e7 " + "w" * 150,  # astral characters and a very long word
           "\ud83d\ude00 a surrogate pair is one character"]  # the pair decodes to U+1F600
    r = _raw(url, "/predict", {"texts": odd})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == len(odd)
    for body, field in [({"text": "\udfff", "label": "ham"}, "text"),
                        ({"text": "hi", "label": "h\ud800m"}, "label"),
                        ({"text": "hi", "predicted": "\ud800", "rating": "good"}, "predicted")]:
        r = _raw(url, "/feedback", body, AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, (body, r.text)
        assert "lone surrogate" in r.json()["detail"][0]["error"]
    r = _raw(url, "/feedback", {"text": "hi", "label": "ham", "\ud800": 1}, AUTH)  # as a field name
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body", r.text
    assert "unicode" in r.json()["detail"][0]["error"]
    r = _raw(url, "/feedback", {"text": "nul\x00 \u202eevil \u0301", "label": "ham"}, AUTH)
    assert r.status_code == 201, r.text


def _chunks(data: bytes, size: int = 16_384):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_a_chunked_body_over_the_limit_is_a_413(api):
    url = api["url"]
    big = json.dumps({"texts": ["a" * 100_000]}).encode()  # over this server's 23 KB limit
    r = httpx.post(url + "/predict", content=_chunks(big), headers={"content-type": "application/json"}, timeout=30)
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413 and "request body over" in r.json()["detail"], r.text
    r = httpx.post(url + "/feedback", content=_chunks(json.dumps({"text": "a" * 100_000, "label": "ham"}).encode()),
                   headers={"content-type": "application/json", **AUTH}, timeout=30)
    assert r.status_code == 413 and "request body over" in r.json()["detail"], r.text
    r = httpx.post(url + "/feedback", content=_chunks(json.dumps({"text": "a" * 100_000, "label": "ham"}).encode()),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 401, r.text  # without the token: refused before the body is read at all
    small = json.dumps({"texts": ["see you at lunch"] * 3}).encode()  # a chunked body under the limit is served
    r = httpx.post(url + "/predict", content=_chunks(small, 7), headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text


class ReadCounter:
    """ASGI wrapper that counts the request-body bytes the app reads."""

    def __init__(self, app):
        self.app, self.read = app, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def test_write_endpoints_check_the_token_before_reading_the_body(api, anonymize):
    from apps.serve import create_app

    p = ServeParams()  # the default limits: a 1.5 MB body is under the size limit (1.54 MB)
    app = ReadCounter(create_app(predictor=api["predictor"], store=api["store"], anonymize=anonymize, p=p,
                                 token=TOKEN))
    big = json.dumps({"text": "x" * 1_500_000, "label": "ham"}).encode()
    with Server(app) as url:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = httpx.post(url + "/feedback", content=big, headers={"content-type": "application/json", **headers},
                           timeout=60)
            assert r.status_code == 401, r.text
        assert app.read == 0  # never read, so never parsed
        # no schema echo: a wrong body without the token is the same 401, not a 422 listing the fields
        for content in (b'{"text": 5, "bogus": [1]}', b'{"text": ', b"x" * 5000):
            r = httpx.post(url + "/feedback", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 401 and r.json() == {"detail": "missing bearer token: send "
                                                                   "`Authorization: Bearer <token>`"}, r.text
        r = httpx.post(url + "/reload", content=big, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 401 and app.read == 0
        # with the token the body is read, and this one is refused for its text's length
        r = httpx.post(url + "/feedback", content=big, headers={"content-type": "application/json", **AUTH},
                       timeout=60)
        assert r.status_code == 413 and "max_chars" in r.json()["detail"] and app.read == len(big), r.text


def test_every_write_endpoint_needs_the_token(api, anonymize):
    """A new POST/PUT/PATCH/DELETE route that is not on the token-first router fails here."""
    from fastapi.testclient import TestClient

    from apps.serve import create_app

    app = create_app(predictor=api["predictor"], store=api["store"], anonymize=anonymize, p=ServeParams(),
                     token=TOKEN)
    client = TestClient(app)
    writes = [(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops
              if m not in ("get", "head")]
    assert ("POST", "/feedback") in writes and ("POST", "/reload") in writes
    for method, path in writes:
        if path == "/predict":  # the one open write-shaped endpoint: it stores nothing
            continue
        r = client.request(method, path, content=b'{"text": 5}', headers={"content-type": "application/json"})
        assert r.status_code == 401, (method, path, r.text)


def test_docs_are_off_unless_a_param_turns_them_on(api, anonymize):
    from fastapi.testclient import TestClient

    from apps.serve import create_app

    for docs, status in ((False, 404), (True, 200)):
        app = create_app(predictor=api["predictor"], store=api["store"], anonymize=anonymize,
                         p=ServeParams(docs=docs), token=TOKEN)
        client = TestClient(app)
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == status, (docs, path)
    assert ServeParams().docs is False


def test_identifiers_cannot_carry_personal_data(api):
    import uuid

    url = api["url"]
    refused = {"07700900123": "does not start with a letter",  # a phone number as key
               "12345": "does not start with a letter",  # digit-only
               "tel-0770-090-0123": "has 11 digits", "ref.4111.1111.1111.1111": "has 16 digits",
               "jane.doe@example.com": "U+0040", "+447700900123": "U+002B", "my key": "U+0020",
               "a" * 65: "has 65 characters", "": "is empty"}
    for value, why in refused.items():
        for field in ("key", "model_version"):
            r = _raw(url, "/feedback", {"text": "hi", "label": "ham", field: value}, AUTH)
            assert r.status_code == 422, (field, value, r.text)
            [err] = r.json()["detail"]
            assert err["field"] == field and why in err["error"] and "at most 6 digits" in err["error"], err
            assert value not in err["error"] or len(value) < 6  # the refused value is not echoed back
    for i, value in enumerate(["ticket-4711", "fb.2026.w49", str(uuid.uuid4()), uuid.uuid4().hex,
                               "0190f3c2-7e6b-7a3d-9c1e-5b2f8d4a6e10"]):  # a UUIDv7 starts with digits
        r = _raw(url, "/feedback", {"text": "hi", "label": "ham", "key": value, "model_version": f"v000{i}"}, AUTH)
        assert r.status_code == 201, (value, r.text)
    stored = {row["key"]: row for row in api["store"].rows()}
    assert stored["ticket-4711"]["model_version"] == "v0000"
