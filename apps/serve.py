"""The prediction API: the production model behind FastAPI, and the feedback that flows back.

    python -m apps.serve           serve the registry's production model (params: serve)
    python -m apps.serve --model DIR     serve another model folder (finetuned/ [+ calibrated/])

Endpoints
  GET  /health     status, the loaded model version, whether a newer production exists on disk
  POST /predict    {"texts": [...]} -> calibrated probabilities per text
                   limits: 1..serve.max_batch texts, each 1..serve.max_chars characters (else 413/422)
  POST /feedback   bearer token required (env var named by serve.token_env). Either a correction
                   {"text": ..., "label": ...} or a rating {"text": ..., "predicted": ..., "rating": "good"|"bad"};
                   optional "key" (idempotency: a retried post is stored once) and "model_version", both
                   identifiers that cannot carry personal data (tuneline.deploy.feedback.check_identifier).
                   The text is anonymized (presidio, the clean stage's settings) before it is stored.
  POST /reload     bearer token required: load the current production model without a restart
  /docs, /redoc, /openapi.json   only with serve.docs: true

Write endpoints check the token before the body is read (apps.guards.token_first_route): an
unauthenticated caller gets 401 whatever body it sends (only a Content-Length over the size limit,
refused before anything, is a 413 first). Errors are JSON `{"detail": ...}` with a clear
status: 400 body is not JSON, 401 missing or wrong token, 413 too many or too long texts (or a body
over the size limit, chunked or not), 422 a field is missing, has the wrong type, is not Unicode
text (a lone surrogate) or is not a safe identifier, 503 feedback is switched off (no token).
No request gets a 5xx: tests/apps/test_serve_fuzz.py fuzzes the OpenAPI schema to check it.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Annotated, Callable, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from apps.guards import BodyLimit, SafeJSONResponse, Text, token_first_route
from tuneline.deploy.feedback import (ID_SCHEMA_PATTERN, IDENTIFIER_RULE, MAX_ID_LENGTH, FeedbackStore,
                                      check_identifier, default_url)
from tuneline.deploy.predictor import Predictor
from tuneline.deploy.serving import Anonymizer, build_anonymizer, load_model, production_loader
from tuneline.errors import run_main
from tuneline.logs import setup_logging
from tuneline.params import ServeParams, load_params

log = logging.getLogger("apps.serve")


# --------------------------------------------------------------------------- request bodies
def _identifier(what: str) -> tuple:
    def check(value: str) -> str:
        return check_identifier(value, what)  # FeedbackError is a ValueError: pydantic makes it a 422
    # the schema shows the characters and the length; check_identifier also counts the digits
    return AfterValidator(check), WithJsonSchema({"type": "string", "maxLength": MAX_ID_LENGTH,
                                                  "pattern": ID_SCHEMA_PATTERN})


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = Field(min_length=1, description="texts to classify, in order")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text = Field(min_length=1)
    label: Text | None = Field(None, max_length=200, description="the correct label (a correction)")
    predicted: Text | None = Field(None, max_length=200, description="the label the model predicted (with rating)")
    rating: Literal["good", "bad"] | None = Field(None, description="was the prediction right?")
    model_version: Annotated[str, *_identifier("model_version")] | None = Field(
        None, description=f"the version that made the prediction: {IDENTIFIER_RULE}")
    key: Annotated[str, *_identifier("key")] | None = Field(
        None, description=f"idempotency key (posting the same key again stores nothing new): {IDENTIFIER_RULE}")


# --------------------------------------------------------------------------- the app
def create_app(*, predictor: Predictor, store: FeedbackStore, anonymize: Anonymizer, p: ServeParams,
               token: str | None, load_production: Callable[[], Predictor] | None = None,
               production_version: Callable[[], str | None] = lambda: None) -> FastAPI:
    """The API around a loaded predictor. Nothing here reads params.yaml or the environment:
    `main()` does, and tests pass tiny real components."""
    docs = p.docs
    app = FastAPI(title="tuneline", version="1", docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    state = {"predictor": predictor}
    pii_lock = threading.Lock()
    app.add_middleware(BodyLimit, limit=p.max_batch * (p.max_chars * 12 + 16) + 4096)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return SafeJSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            msg = next(e for e in errors if e.get("type") == "json_invalid")
            why = msg.get("ctx", {}).get("error", msg["msg"])
            return SafeJSONResponse(status_code=400, content={"detail": f"request body is not valid JSON: {why}"})
        detail = [{"field": ".".join(str(x) for x in e["loc"] if x != "body")[:100] or "body", "error": e["msg"]}
                  for e in errors]
        return SafeJSONResponse(status_code=422, content={"detail": detail})

    def check_token(request: Request) -> None:
        """Headers only: runs before the body of a write endpoint is read (token_first_route)."""
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

    writes = APIRouter(route_class=token_first_route(check_token))  # every write endpoint: the token first

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

    @writes.post("/feedback", status_code=201)
    def feedback(body: FeedbackRequest) -> JSONResponse:
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

    @writes.post("/reload")
    def reload() -> dict:
        if load_production is None:
            raise HTTPException(409, "this server was started on a fixed model folder (--model); restart it instead")
        before = state["predictor"].version
        state["predictor"] = load_production()
        log.info("reloaded: %s -> %s", before, state["predictor"].version)
        return {"model_version": state["predictor"].version, "previous": before}

    app.include_router(writes)
    return app


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog="python -m apps.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="serve this model folder (finetuned/ [+ calibrated/]) or compressed variant "
                                    "folder instead of production")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.serve
    if p.threads:
        import torch

        torch.set_num_threads(p.threads)
    load, version = production_loader(params.paths.registry, params.paths.cache)
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
    run_main(main)
