"""What every model call goes through before its endpoint: its start, and the API key check.

``AccessMiddleware`` gives each ``/v1/models/`` call its id, arrival time and caller (the API
key's name) and refuses a call without a valid key (401, recorded in the call trail) before its
body is read. The small helpers here name a call's model from its path and describe a malformed
body for the trail.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse

from ml_platform.serving.auth import presented_key
from ml_platform.serving.calls import UNAUTHENTICATED, canonical_json
from ml_platform.serving.service import CallStart, PredictionService, new_request_id

API_PREFIX = "/v1/models/"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def model_in_path(path: str) -> str:
    """The model named by ``/v1/models/<model>/...``, or '' for another path."""
    if not path.startswith(API_PREFIX):
        return ""
    return path[len(API_PREFIX) :].split("/", 1)[0]


class AccessMiddleware:
    """Starts every ``/v1/models/`` call (id, arrival, caller); refuses it without a valid key.

    Pure ASGI (no per-call task or body copy). The caller's name goes to the request's state
    (``request.state.call``); a refused call is recorded (caller ``unauthenticated``) and
    answered 401 here, before the body is read.

    Args:
        app: The app behind it.
        service: The prediction service (keys, trail).
    """

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], service: PredictionService
    ) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        called_at = datetime.now(UTC)
        request_id = new_request_id()
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        api_key = headers.get(b"x-api-key", b"").decode("latin-1") or None
        caller = self.service.keys.caller(presented_key(authorization, api_key))
        call = CallStart(request_id, called_at, started, caller or UNAUTHENTICATED)
        scope.setdefault("state", {})["call"] = call
        if caller is not None:
            await self.app(scope, receive, send)
            return
        detail = (
            "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
            "with a key the service was given"
        )
        self.service.record(
            call,
            model=model_in_path(scope["path"]) or self.service.model,
            status=401,
            error=detail,
        )
        self.service._log(call, [], 401)
        response = JSONResponse(
            {"detail": detail, "request_id": request_id},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer", "X-Request-ID": request_id},
        )
        await response(scope, receive, send)


def validation_detail(errors: Sequence[Any]) -> str:
    """The fields a body got wrong, for the trail (the values sent are left out)."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed body"


def body_entity(body: Any) -> str:
    """The canonical JSON of a malformed body's entity, when it holds one, else ``{}``."""
    if isinstance(body, dict) and isinstance(body.get("entity"), dict):
        return canonical_json(body["entity"])[:2000]
    return "{}"
