"""The prediction API: the production model behind FastAPI, and the feedback that flows back.

    python -m tuneline.serve                 serve the registry's production model (params: serve)
    python -m tuneline.serve --model DIR     serve another model folder (finetuned/ [+ calibrated/])

Endpoints
  GET  /health     status, the loaded model version, whether a newer production exists on disk
  POST /predict    {"texts": [...]} -> calibrated probabilities per text
                   limits: 1..serve.max_batch texts, each 1..serve.max_chars characters (else 413/422)
  POST /feedback   bearer token required (env var named by serve.token_env). Either a correction
                   {"text": ..., "label": ...} or a rating {"text": ..., "predicted": ..., "rating": "good"|"bad"};
                   optional "key" (idempotency: a retried post is stored once) and "model_version".
                   The text is anonymized (presidio, the clean stage's settings) before it is stored.
  POST /reload     bearer token required: load the current production model without a restart

Errors are JSON `{"detail": ...}` with a clear status: 400 body is not JSON, 401 missing or wrong
token, 413 too many or too long texts (or a body over the size limit), 422 a field is missing or
has the wrong type, 503 feedback is switched off (no token configured).
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Callable, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneline.deploy.feedback import FeedbackStore, default_url
from tuneline.params import CleanParams, Params, ServeParams
from tuneline.deploy.predictor import Predictor
from tuneline.deploy.registry import Registry

log = logging.getLogger("tuneline.serve")

Anonymizer = Callable[[list[str]], list[tuple[str, int]]]
"""texts -> [(anonymized text, number of replaced entities)]"""


# --------------------------------------------------------------------------- request bodies
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, description="texts to classify, in order")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    label: str | None = Field(None, description="the correct label (a correction)")
    predicted: str | None = Field(None, description="the label the model predicted (with rating)")
    rating: Literal["good", "bad"] | None = Field(None, description="was the prediction right?")
    model_version: str | None = Field(None, max_length=64)
    key: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
                            description="idempotency key: posting the same key again stores nothing new")


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is a 413 before it is parsed
    (Content-Length checked up front; chunked bodies counted as they arrive)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return message

        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        body = f'{{"detail":"request body over {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- the app
def create_app(*, predictor: Predictor, store: FeedbackStore, anonymize: Anonymizer, p: ServeParams,
               token: str | None, load_production: Callable[[], Predictor] | None = None,
               production_version: Callable[[], str | None] = lambda: None) -> FastAPI:
    """The API around a loaded predictor. Nothing here reads params.yaml or the environment:
    `main()` does, and tests pass tiny real components."""
    app = FastAPI(title="tuneline", version="1", docs_url="/docs", redoc_url=None)
    state = {"predictor": predictor}
    pii_lock = threading.Lock()
    app.add_middleware(BodyLimit, limit=p.max_batch * (p.max_chars * 12 + 16) + 4096)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            msg = next(e for e in errors if e.get("type") == "json_invalid")
            return JSONResponse(status_code=400, content={"detail": f"request body is not valid JSON: "
                                                                    f"{msg.get('ctx', {}).get('error', msg['msg'])}"})
        detail = [{"field": ".".join(str(x) for x in e["loc"] if x != "body"), "error": e["msg"]} for e in errors]
        return JSONResponse(status_code=422, content={"detail": detail})

    def check_token(request: Request) -> None:
        if not token:
            raise HTTPException(503, f"this endpoint is off: set the environment variable {p.token_env} "
                                     "to a secret token and restart the server")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "missing bearer token: send `Authorization: Bearer <token>`",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def check_text(text: str, where: str) -> None:
        if not text.strip():
            raise HTTPException(422, f"{where}: empty text")
        if len(text) > p.max_chars:
            raise HTTPException(413, f"{where}: {len(text)} characters; the limit is serve.max_chars = {p.max_chars}")

    @app.get("/health")
    def health() -> dict:
        pred = state["predictor"]
        on_disk = production_version()
        return {"status": "ok", "model_version": pred.version, "calibrated": pred.calibrated,
                "labels": pred.labels, "production_version": on_disk,
                "stale": on_disk is not None and on_disk != pred.version,
                "limits": {"max_batch": p.max_batch, "max_chars": p.max_chars},
                "feedback": "on" if token else f"off (set {p.token_env})"}

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict:
        if len(body.texts) > p.max_batch:
            raise HTTPException(413, f"{len(body.texts)} texts; the limit is serve.max_batch = {p.max_batch} "
                                     "per request")
        for i, t in enumerate(body.texts):
            check_text(t, f"texts[{i}]")
        pred = state["predictor"]
        probs = pred.predict_proba(body.texts, batch_size=p.batch_size)
        out = []
        for row in probs:
            k = int(row.argmax())
            out.append({"label": pred.labels[k], "confidence": float(row[k]),
                        "probs": {lab: float(v) for lab, v in zip(pred.labels, row)}})
        return {"model_version": pred.version, "calibrated": pred.calibrated, "predictions": out}

    @app.post("/feedback", status_code=201)
    def feedback(body: FeedbackRequest, request: Request) -> JSONResponse:
        check_token(request)
        check_text(body.text, "text")
        labels = state["predictor"].labels
        if body.label is not None and (body.rating is not None or body.predicted is not None):
            raise HTTPException(422, "send either a correction {text, label} or a rating {text, predicted, rating}, "
                                     "not both")
        if body.label is not None:
            kind = "label"
            if body.label not in labels:
                raise HTTPException(422, f"label {body.label!r} is not one of {labels}")
        elif body.rating is not None and body.predicted is not None:
            kind = "rating"
            if body.predicted not in labels:
                raise HTTPException(422, f"predicted {body.predicted!r} is not one of {labels}")
        else:
            raise HTTPException(422, "feedback needs `label` (the correct label) or `predicted` + `rating` (good|bad)")
        with pii_lock:  # presidio/spaCy objects are not guaranteed thread-safe
            [(clean, n_pii)] = anonymize([body.text])
        stored = store.add(kind=kind, text=clean, label=body.label, predicted=body.predicted, rating=body.rating,
                           model_version=body.model_version or state["predictor"].version, pii_count=n_pii,
                           key=body.key)
        return JSONResponse(status_code=200 if stored.duplicate else 201,
                            content={"id": stored.id, "duplicate": stored.duplicate, "kind": kind,
                                     "pii_replaced": n_pii})

    @app.post("/reload")
    def reload(request: Request) -> dict:
        check_token(request)
        if load_production is None:
            raise HTTPException(409, "this server was started on a fixed model folder (--model); restart it instead")
        before = state["predictor"].version
        state["predictor"] = load_production()
        log.info("reloaded: %s -> %s", before, state["predictor"].version)
        return {"model_version": state["predictor"].version, "previous": before}

    return app


# --------------------------------------------------------------------------- wiring
def build_anonymizer(clean: CleanParams) -> Anonymizer:
    """The clean stage's presidio set-up (clean.*), as texts -> [(anonymized, n_replaced)].
    The analyzer is built once (~1 s); each call anonymizes in this process (no worker pool)."""
    from tuneline.data.pii import engine, fast

    analyzer = engine.build_analyzer(clean.spacy_model, id_patterns=clean.id_patterns)

    def anonymize(texts: list[str]) -> list[tuple[str, int]]:
        out = fast.anonymize_batch(texts, analyzer, entities=clean.pii_entities,
                                  score_threshold=clean.pii_score_threshold, operator=clean.pii_operator,
                                  salt=clean.pii_hash_salt, batch_size=clean.batch_size, n_process=1)
        return [(a.text, len(a.replaced)) for a in out]

    anonymize(["warm-up: a bad clean.pii_entities fails here, at start-up"])
    return anonymize


def load_model(path: str | Path, version: str, cache_dir: str | Path | None = None) -> Predictor:
    """A model folder (finetuned/ [+ calibrated/]) or a compressed variant folder
    (${paths.models}/compressed/<name>/: variant.json, weights, its own calibrator/)."""
    path = Path(path)
    if not (path / "variant.json").exists():
        return Predictor.load(path, version, cache_dir=cache_dir)
    from tuneline.evaluate.calibration import load_calibrator
    from tuneline.compress.storage import load_variant

    v = load_variant(path)
    calibrator = load_calibrator(path / "calibrator") if (path / "calibrator" / "calibrator.json").exists() else None
    return Predictor(version=version, labels=v.labels, max_length=v.max_length, model=v.model, tokenizer=v.tokenizer,
                     calibrator=calibrator, meta=dict(v.info))


def production_loader(params: Params) -> tuple[Callable[[], Predictor], Callable[[], str | None]]:
    registry = Registry(params.paths.registry)

    def version() -> str | None:
        rec = registry.production()
        return rec["version"] if rec else None

    def load() -> Predictor:
        rec = registry.production()
        if rec is None:
            raise FileNotFoundError(f"{registry.pointer}: no production model yet. Run one retraining "
                                    "(python -m flows.retrain run) or pass --model DIR")
        return Predictor.load(registry.version_dir(rec["version"]), rec["version"], cache_dir=params.paths.cache)

    return load, version


def main(argv: list[str] | None = None) -> None:
    from tuneline.logs import setup_logging
    from tuneline.params import load_params

    setup_logging()
    ap = argparse.ArgumentParser(prog="python -m tuneline.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="serve this model folder (finetuned/ [+ calibrated/]) or compressed variant "
                                    "folder instead of production")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.serve
    if p.threads:
        import torch

        torch.set_num_threads(p.threads)
    load, version = production_loader(params)
    if args.model:
        predictor = load_model(args.model, Path(args.model).name, cache_dir=params.paths.cache)
        load = None
    else:
        predictor = load()
    store = FeedbackStore(params.feedback.url or default_url(params.paths.feedback),
                          busy_timeout_ms=params.feedback.busy_timeout_ms)
    token = os.environ.get(p.token_env) or None
    if not token:
        log.warning("%s is not set: /feedback and /reload answer 503", p.token_env)
    app = create_app(predictor=predictor, store=store, anonymize=build_anonymizer(params.clean), p=p, token=token,
                     load_production=load, production_version=version)
    log.info("serving %s (%s) on http://%s:%d; feedback -> %s", predictor.version,
             "calibrated" if predictor.calibrated else "uncalibrated", p.host, p.port, store.path)
    import uvicorn

    uvicorn.run(app, host=p.host, port=p.port, log_level="info")


if __name__ == "__main__":
    main()
