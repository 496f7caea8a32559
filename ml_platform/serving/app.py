"""The prediction service: a FastAPI app answering one model's calls, each one audited.

``POST /v1/models/<model>/predict`` takes the entity's join keys and the request-time features,
reads the other features from the Feast online store (the training set's own references), routes
the entity to the champion or the canary (sticky, ``routing``), and answers the prediction with
the call's request id, the version and its role. ``/predict/batch`` does the same for a list of
instances, each its own call. Every call, refused and failed ones included, is recorded in the
call trail (``serving.journal.CallTrail``: in the write-ahead journal before the answer leaves)
with its caller (the API key's name), the feature values used, the views' fingerprints, the
result and the latency. Errors are 401 (no valid key), 404 (unknown model; entity not in the
online store, naming the keys and views), 422 (malformed body, naming the field), 503 (no
servable version, online store down); bad input never gives a 500.

``/healthz`` answers while the process runs; ``/readyz`` once a servable champion is loaded and the
trail is open (503 with the reasons otherwise); ``/metrics`` in Prometheus' format.

The calls' work is ``serving.service.PredictionService``'s; each call's start and the API key
check are ``serving.middleware``'s.

FastAPI is imported at the top: the code location never imports this module (only the service
does).
"""

from __future__ import annotations

import gc
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse
from starlette.responses import Response as PlainResponse

from ml_platform.serving.middleware import (
    API_PREFIX,
    AccessMiddleware,
    body_entity,
    model_in_path,
    validation_detail,
)
from ml_platform.serving.schema import ApiModels
from ml_platform.serving.service import CallStart, PredictionService, ServingError

if TYPE_CHECKING:
    from pydantic import BaseModel

LOGGER = logging.getLogger("ml_platform.serving")
JSON_HINT = "send the body as JSON, with the header 'Content-Type: application/json'"


def _with_body(function: Callable[..., Any], body: type[BaseModel]) -> Callable[..., Any]:
    """``function(body, request)`` with its body's model as the annotation FastAPI reads."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("body", kind, annotation=body),
            inspect.Parameter("request", kind, annotation=Request),
        ]
    )
    return function


def create_app(service: PredictionService) -> FastAPI:
    """The FastAPI app of a prediction service.

    Args:
        service: The service (started and stopped with the app's lifespan).

    Returns:
        The app: predict and batch endpoints, health, readiness, metrics, OpenAPI.
    """
    model = service.model
    app = FastAPI(
        title=f"{model} prediction service",
        version="1",
        description=(
            f"Predictions of '{model}' ({service.spec.task}) by its champion, or its canary for "
            "a sticky share of the entities. Send the entity's join keys and the request-time "
            "features; the other inputs are read from the Feast online store: "
            f"{', '.join(service.online.refs) or 'none'}. Authenticate with "
            "'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
        ),
        lifespan=_lifespan(service),
    )
    _add_predict_routes(app, service)
    _add_error_handlers(app, service)
    _add_operations_routes(app, service)
    app.openapi = _openapi_with_security(app)  # type: ignore[method-assign]
    app.state.service = service
    app.add_middleware(AccessMiddleware, service=service)  # type: ignore[arg-type]
    return app


def _lifespan(service: PredictionService) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the service started before the first call, stopped after the last."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        # The libraries loaded at start (torch, Feast, MLflow) are millions of long-lived
        # objects: kept out of the collector's full passes, which otherwise stall calls.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            service.stop()

    return lifespan


def _json_response(content: Any, status: int, request_id: str) -> PlainResponse:
    """A compact JSON answer carrying the call's id in ``X-Request-ID``."""
    return PlainResponse(
        json.dumps(content, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"X-Request-ID": request_id},
    )


def _add_predict_routes(app: FastAPI, service: PredictionService) -> None:
    """The predict and batch endpoints of the service's model; a 404 for any other model."""
    api: ApiModels = service.api
    model = service.model
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": api.error, "description": "Missing or invalid API key."},
        404: {"model": api.error, "description": "The entity is not in the online store."},
        503: {"model": api.error, "description": "No servable version, or the store is down."},
    }
    security = {"security": [{"bearerAuth": []}, {"apiKeyHeader": []}]}

    def answer(request: Request, bodies: Sequence[BaseModel], batch: bool) -> PlainResponse:
        call: CallStart = request.state.call
        instances = service.instances(bodies)
        try:
            answers = service.predict(instances, call)
        except ServingError:
            raise
        except Exception as error:  # a bug of ours: recorded as a 500, the process lives on
            LOGGER.exception("%s: call %s failed", model, call.request_id)
            detail = f"internal error ({type(error).__name__}); the call is {call.request_id}"
            service.record(call, status=500, error=detail)
            raise ServingError(500, detail, call.request_id) from error
        content = {"predictions": answers} if batch else answers[0]
        return _json_response(content, 200, call.request_id)

    # Coroutines answering inline: the work holds the GIL whichever thread runs it, and a hop
    # to the thread pool and back cost every call about a millisecond on 2 cores.
    async def predict(body: BaseModel, request: Request) -> PlainResponse:
        return answer(request, [body], batch=False)

    async def predict_batch(body: BaseModel, request: Request) -> PlainResponse:
        return answer(request, body.instances, batch=True)  # type: ignore[attr-defined]

    def add_route(
        path: str,
        endpoint: Callable[..., Any],
        body: type[BaseModel],
        response: type[BaseModel],
        summary: str,
        description: str,
    ) -> None:
        app.post(
            f"{API_PREFIX}{model}{path}",
            response_model=response,
            responses=errors,
            summary=summary,
            description=description,
            openapi_extra=security,
            tags=[model],
        )(_with_body(endpoint, body))

    add_route(
        "/predict",
        predict,
        api.request,
        api.response,
        f"Predict with {model}",
        "One call: the entity's join keys and request-time features in, the prediction, the "
        "version that answered and the call's id out.",
    )
    add_route(
        "/predict/batch",
        predict_batch,
        api.batch_request,
        api.batch_response,
        f"Predict with {model}, several calls at once",
        "Each instance is its own call in the trail, routed by its own entity. The batch is "
        "answered whole: one entity missing from the online store makes it a 404 naming the "
        "instances.",
    )

    def unknown_model(name: str, request: Request) -> PlainResponse:
        call: CallStart = request.state.call
        detail = f"unknown model '{name}': this service serves '{model}' at {API_PREFIX}{model}/"
        service.record(call, model=name, status=404, error=detail)
        service._log(call, [], 404)
        raise ServingError(404, detail, call.request_id)

    app.post(f"{API_PREFIX}{{name}}/predict", include_in_schema=False)(unknown_model)
    app.post(f"{API_PREFIX}{{name}}/predict/batch", include_in_schema=False)(unknown_model)


def _add_error_handlers(app: FastAPI, service: PredictionService) -> None:
    """Answer a ``ServingError`` and a malformed body (422, recorded) with the call's id."""

    @app.exception_handler(ServingError)
    async def serving_error(_: Request, error: ServingError) -> PlainResponse:
        content: dict[str, Any] = {"detail": error.detail, "request_id": error.request_id}
        if len(error.request_ids) > 1:
            content["request_ids"] = error.request_ids
        return _json_response(content, error.status, error.request_id)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> PlainResponse:
        call: CallStart | None = getattr(request.state, "call", None)
        problems = jsonable_encoder(error.errors())
        if call is None:  # not a model call
            return JSONResponse({"detail": problems}, status_code=422)
        detail = validation_detail(problems)
        content: dict[str, Any] = {"detail": problems, "request_id": call.request_id}
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type:
            content["hint"] = JSON_HINT
            detail = f"{JSON_HINT}; {detail}"
        name = model_in_path(request.url.path)
        service.record(call, model=name, status=422, error=detail, entity=body_entity(error.body))
        service._log(call, [], 422)
        return _json_response(content, 422, call.request_id)


def _add_operations_routes(app: FastAPI, service: PredictionService) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``."""

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="A servable champion is loaded")
    def readyz() -> PlainResponse:
        ready, details = service.readiness()
        return PlainResponse(
            json.dumps(details), status_code=200 if ready else 503, media_type="application/json"
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics() -> PlainResponse:
        service.metrics.set_backlog(service.model, service.trail.backlog)
        body, content_type = service.metrics.render()
        return PlainResponse(body, media_type=content_type)


def _openapi_with_security(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI schema (built once) with its two ways to send the API key."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
