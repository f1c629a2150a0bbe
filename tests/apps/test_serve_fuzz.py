"""Property-based fuzzing of the API against a real uvicorn server on 127.0.0.1 (tiny real model,
real presidio pattern engine, real SQLite store): no request gets a 5xx, none hangs.

- schemathesis generates requests from the app's own OpenAPI schema, valid ones (positive) and
  ones that break it (negative: wrong types, missing or extra fields, bad JSON shapes), for every
  operation, with the bearer token so the write endpoints' bodies are exercised too;
- hypothesis sends arbitrary unicode (lone surrogates, combining marks, bidi and format
  characters, NUL, astral characters, long words) in /predict and /feedback texts.

Bounded: a fixed number of cases per operation and mode, derandomized (the same cases on every
run, so a failure reproduces), every request under a timeout. The numbers it prints are the ones
in docs/benchmarks.md (the fuzz section).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest
import schemathesis  # in the test extra: a missing install fails here, loudly, rather than skipping
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.apps.test_serve import AUTH, LABELS, TOKEN, Server, build_model_folder
from tuneline.deploy.feedback import FeedbackStore, default_url
from tuneline.deploy.predictor import Predictor
from tuneline.params import CleanParams, ServeParams

CASES = 100  # per operation and generation mode (2 with a body x 2 modes, 2 without: 6 runs)
UNICODE_CASES = 100  # per endpoint (/predict, /feedback)
REQUEST_TIMEOUT_S = 10  # a request that takes longer is a hang: the test fails
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    from apps.serve import create_app
    from tuneline.deploy.serving import build_anonymizer

    root = tmp_path_factory.mktemp("fuzz")
    predictor = Predictor.load(build_model_folder(tiny_model_dir, root / "model"), "v0001")
    anonymize = build_anonymizer(CleanParams(spacy_model="none", pii_entities=["EMAIL_ADDRESS", "PHONE_NUMBER"]))
    with FeedbackStore(default_url(root / "feedback")) as store:
        app = create_app(predictor=predictor, store=store, anonymize=anonymize,
                         p=ServeParams(max_batch=8, max_chars=200), token=TOKEN,
                         load_production=lambda: predictor, production_version=lambda: "v0001")
        with Server(app) as url:
            yield {"url": url, "app": app, "store": store}


def _still_serving(url: str) -> None:
    assert httpx.get(url + "/health", timeout=REQUEST_TIMEOUT_S).status_code == 200


def test_fuzzed_openapi_requests_never_get_a_5xx(served):
    from schemathesis.config import SchemathesisConfig
    from schemathesis.generation import GenerationMode

    url = served["url"]
    # the schema /openapi.json serves with serve.docs on; unsanitized, so a failure's curl line shows the `key` sent
    config = SchemathesisConfig.from_dict({"output": {"sanitization": {"enabled": False}}})
    schema = schemathesis.openapi.from_dict(served["app"].openapi(), config=config)
    statuses: dict[str, Counter] = {}
    start = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        takes_input = any(len(x) for x in (operation.body, operation.query, operation.path_parameters,
                                           operation.headers, operation.cookies))
        # an operation without inputs (GET /health, POST /reload) has nothing to break: positive only
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,):
            seen = statuses.setdefault(f"{operation.method.upper()} {operation.path} {mode.value}", Counter())

            @settings(FUZZ, max_examples=CASES)
            @given(case=operation.as_strategy(generation_mode=mode), label=st.sampled_from([None, *LABELS]))
            def call(case, label):
                if label and mode.is_positive and isinstance(case.body, dict) and "text" in case.body:
                    # the schema cannot know the model's labels nor that a body needs `label` or `predicted` +
                    # `rating`: two in three /feedback cases get a correction with a real label, so they get stored
                    case.body["label"] = label
                    case.body.pop("predicted", None), case.body.pop("rating", None)
                response = case.call(base_url=url, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
                seen[response.status_code] += 1
                assert response.status_code < 500, (f"{response.status_code} {response.text[:300]}\n"
                                                    f"{case.as_curl_command(headers=AUTH)}")

            call()
    seconds = time.monotonic() - start
    _still_serving(url)
    total = sum(sum(c.values()) for c in statuses.values())
    fives = sum(n for c in statuses.values() for s, n in c.items() if s >= 500)
    assert len(statuses) == 6 and all(statuses.values()), statuses  # each operation, in each mode it has
    print(f"\nschemathesis: {total} requests, {fives} 5xx, {seconds:.1f} s; "
          + "; ".join(f"{k}: {dict(sorted(v.items()))}" for k, v in statuses.items()))


ODD = st.one_of(
    st.characters(),  # any code point but surrogates
    st.characters(categories=["Mn", "Me", "Cf", "Cc", "Zs", "Zl", "Zp", "Co"]),  # marks, bidi/format, NUL, spaces
    st.sampled_from(["\x00", "\u202e", "\u2066", "\u0301", "\ufeff", "\u200b", "\U0001f600", "\U000e0001"]),
)
SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)  # st.characters(categories=["Cs"]) in a one_of loses them
TEXTS = st.one_of(st.text(ODD, min_size=1, max_size=60),
                  st.text(ODD, min_size=1, max_size=3).map(lambda s: s * 70),  # long words, some over max_chars
                  st.text(st.one_of(ODD, SURROGATE), min_size=1, max_size=20))  # with lone surrogates


def _post(url: str, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    # json.dumps escapes non-ASCII: a lone surrogate travels as `\ud800`, as any JSON client may send it
    return httpx.post(url + path, content=json.dumps(body).encode(), timeout=REQUEST_TIMEOUT_S,
                      headers={"content-type": "application/json", **(headers or {})})


def _lone_surrogate(text: str) -> bool:
    """Whether the server gets a lone surrogate: on the wire a high one followed by a low one is a
    valid pair (\\ud83d\\ude00 is U+1F600), which every JSON parser joins."""
    try:
        json.loads(json.dumps(text)).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def test_arbitrary_unicode_texts_get_an_answer_or_a_clear_4xx(served):
    url, statuses = served["url"], Counter()

    def expect(r: httpx.Response, texts: list[str], ok: int) -> None:
        statuses[r.status_code] += 1
        assert r.status_code in (ok, 200, 413, 422), r.text[:300]
        if any(_lone_surrogate(t) for t in texts):
            assert r.status_code == 422 and "lone surrogate" in r.text, r.text[:300]
        elif r.status_code == 422:  # the only other 422 for these texts: nothing but whitespace
            assert "empty text" in r.text and any(not t.strip() for t in texts), r.text[:300]

    @settings(FUZZ, max_examples=UNICODE_CASES)
    @given(texts=st.lists(TEXTS, min_size=1, max_size=4))
    def predict(texts):
        expect(_post(url, "/predict", {"texts": texts}), texts, 200)

    @settings(FUZZ, max_examples=UNICODE_CASES)
    @given(text=TEXTS, label=st.sampled_from(["ham", "spam"]))
    def feedback(text, label):
        expect(_post(url, "/feedback", {"text": text, "label": label}, AUTH), [text], 201)

    start = time.monotonic()
    predict()
    feedback()
    _still_serving(url)
    assert statuses[200] + statuses[201] > 0 and statuses[422] > 0, statuses  # both answers were exercised
    print(f"\nunicode: {sum(statuses.values())} requests, {sum(n for s, n in statuses.items() if s >= 500)} 5xx, "
          f"{time.monotonic() - start:.1f} s; {dict(sorted(statuses.items()))}")
