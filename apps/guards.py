"""What the prediction API (apps/serve.py) checks before FastAPI reads a request, and how it answers.

- `BodyLimit` (ASGI middleware): a body over the limit is a 413, whether it states its size
  (Content-Length: refused before a byte is read) or arrives chunked (counted as it arrives; the
  413 goes out the moment the count passes the limit, and whatever the app would answer to the
  cut-off body, FastAPI's 400 "error parsing the body", is dropped).
- `token_first_route(check)`: an APIRoute class whose handler runs `check(request)` (headers only)
  before FastAPI reads, parses or validates the body: an unauthenticated caller gets a 401 and
  nothing else (no 422 that echoes the schema), and its body is never read.
- `SafeJSONResponse`: JSON with non-ASCII characters escaped, so every error answer encodes, even
  one that names what the client sent (a lone surrogate would make a UTF-8 encoder raise: a 500).
- `valid_unicode`: the validator of every text field: a lone surrogate ("\\ud800") is not Unicode
  text, and the tokenizer, presidio and SQLite cannot take it, so it is a 422 naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BeforeValidator


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is a 413 (see the module docstring)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        seen, started, rejected = 0, False, False

        async def counted():
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if not started and not rejected:
                        rejected = True
                        await self._reject(send)
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if rejected:  # the 413 is out: the app's answer to the cut-off body goes nowhere
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except _BodyTooLarge:
            if not rejected:  # the app had started answering before it read the body: nothing to fix
                raise

    async def _reject(self, send):
        body = f'{{"detail":"request body over {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def token_first_route(check: Callable[[Request], None]) -> type[APIRoute]:
    """An APIRoute class for write endpoints: `check` (which raises HTTPException) runs on the
    request's headers before the body is read, parsed or validated."""

    class TokenFirstRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def checked_first(request: Request) -> Response:
                check(request)
                return await handler(request)

            return checked_first

    return TokenFirstRoute


class SafeJSONResponse(JSONResponse):
    """JSON in plain ASCII (\\uXXXX escapes): encodes whatever text the client sent."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def valid_unicode(value):
    """A string without lone surrogates (else ValueError, a 422); runs before pydantic's own checks,
    whose message for it ("unable to parse raw data as a unicode string") says less."""
    if not isinstance(value, str):
        return value  # pydantic's type check answers that
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"a lone surrogate U+{ord(value[e.start]):04X} at character {e.start} is not Unicode "
                         "text: send UTF-8 (an escaped pair such as \\ud83d\\ude00 is one character and is fine)")
    return value


Text = Annotated[str, BeforeValidator(valid_unicode)]
"""A request string that is real Unicode (no lone surrogates)."""
