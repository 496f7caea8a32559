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

FastAPI is imported at the top: the code location never imports this module (only the service
does).
"""

from __future__ import annotations

import gc
import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse
from starlette.responses import Response as PlainResponse

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.registry.client import ModelRegistry
from ml_platform.serving.auth import ApiKeys, presented_key
from ml_platform.serving.calls import (
    UNAUTHENTICATED,
    CallRecord,
    canonical_json,
    entity_key,
    features_hash,
    json_safe,
)
from ml_platform.serving.features import OnlineFeatures, OnlineRow, OnlineStoreError
from ml_platform.serving.metrics import ServingMetrics
from ml_platform.serving.routing import CANARY, route
from ml_platform.serving.schema import ApiModels, api_models, view_join_keys
from ml_platform.serving.versions import ServedVersion, Serving, VersionWatcher
from ml_platform.spec.catalog import Catalog, ResolvedFeatures
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ml_platform.serving.journal import CallTrail

ACCESS_LOGGER = logging.getLogger("ml_platform.serving.access")
LOGGER = logging.getLogger("ml_platform.serving")
API_PREFIX = "/v1/models/"
JSON_HINT = "send the body as JSON, with the header 'Content-Type: application/json'"
UNKNOWN_MODEL = "unknown"  # the metrics label of a model name the service does not serve

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ServingError(Exception):
    """A call answered with an error; it is already in the call trail.

    Attributes:
        status: The HTTP status.
        detail: What was wrong and how to fix it.
        request_id: The call's id (a batch's first instance).
        request_ids: A batch's instance ids, each a call in the trail.
    """

    def __init__(
        self, status: int, detail: str, request_id: str, request_ids: list[str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.request_id = request_id
        self.request_ids = request_ids or [request_id]


@dataclass(frozen=True)
class CallStart:
    """What is known of a call when it arrives (set by the access middleware).

    Attributes:
        request_id: The call's id (uuid4 hex); a batch's instances get their own.
        called_at: When it arrived (UTC).
        started: ``time.perf_counter()`` at arrival, for the latency.
        caller: The API key's name (or ``anonymous``).
    """

    request_id: str
    called_at: datetime
    started: float
    caller: str


@dataclass(frozen=True)
class Instance:
    """One call's validated input.

    Attributes:
        entity: Join key -> value.
        features: Request-time feature -> value.
        ids: Identifiers sent with the call.
        key: The entity's canonical JSON.
    """

    entity: dict[str, Any]
    features: dict[str, Any]
    ids: dict[str, Any]
    key: str


def new_request_id() -> str:
    """A new call id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


class PredictionService:
    """One model's prediction service: versions, online features, routing, the call trail.

    Args:
        spec: The model spec.
        resolved: Its resolved features (the training set's feature references).
        catalog: The loaded specs (column types of keys and request features).
        settings: The platform settings (MLflow, Feast, the audit database).
        keys: The API keys accepted.
        trail: The call trail (opened by ``start``, closed by ``stop``).
        refresh_seconds: Seconds between two polls of the registry.
        registry: The MLflow registry (default: the settings').
    """

    def __init__(
        self,
        spec: ModelSpec,
        resolved: ResolvedFeatures,
        catalog: Catalog,
        settings: PlatformSettings,
        *,
        keys: ApiKeys,
        trail: CallTrail,
        refresh_seconds: float = 5.0,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.model = spec.name
        self.spec = spec
        self.keys = keys
        self.trail = trail
        self.api = api_models(spec, resolved, catalog)
        self.metrics = ServingMetrics()
        self.inputs = resolved.model_inputs
        self.online = OnlineFeatures(
            settings, resolved.feature_views, view_join_keys(resolved, catalog)
        )
        self.watcher = VersionWatcher(
            spec.name,
            self.inputs,
            registry or ModelRegistry.for_settings(settings),
            AuditLog(settings.audit_url),
            self.online,
            self.metrics,
            refresh_seconds,
        )
        self._multiclass = spec.task == "multiclass_classification"

    def start(self) -> None:
        """Open the call trail (replaying what a previous process left) and start polling."""
        self.trail.open()
        self.watcher.start()

    def stop(self) -> None:
        """Stop polling and close the call trail: every recorded call reaches the database."""
        self.watcher.stop()
        self.trail.close()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the service can answer calls, and what it serves.

        Returns:
            (ready, details): ready when a servable champion is loaded and the trail is open.
        """
        serving = self.watcher.current
        reasons = list(serving.problems)
        if not self.trail.is_open:
            reasons.append("the call trail is not open")
        ready = serving.champion is not None and self.trail.is_open
        return ready, {
            "status": "ready" if ready else "not ready",
            "model": self.model,
            "champion": serving.champion.version if serving.champion else None,
            "canary": serving.canary.version if serving.canary else None,
            "canary_share": serving.canary_share,
            "canary_since": serving.canary_since.isoformat() if serving.canary_since else None,
            "feature_views": serving.online.fingerprints,
            "reasons": reasons,
        }

    def record(
        self,
        call: CallStart,
        *,
        request_id: str | None = None,
        model: str | None = None,
        status: int,
        error: str | None = None,
        instance: Instance | None = None,
        entity: str = "{}",
        served: ServedVersion | None = None,
        features: dict[str, Any] | None = None,
        feature_views: dict[str, str] | None = None,
        prediction: float | list[float] | None = None,
    ) -> None:
        """Record one call in the trail and count it in the metrics.

        Args:
            call: The call's arrival.
            request_id: The call's id (default: ``call.request_id``).
            model: The model called (default: this service's).
            status: The HTTP status answered.
            error: What went wrong, for a failed call.
            instance: The validated input, when it was valid.
            entity: The entity's canonical JSON, when there is no ``instance``.
            served: The version that answered, if any.
            features: Every model input value used.
            feature_views: The views' fingerprints.
            prediction: The answer.
        """
        seconds = time.perf_counter() - call.started
        name = model or self.model
        values = json_safe(features) if features else {}
        self.trail.record(
            CallRecord(
                request_id=request_id or call.request_id,
                called_at=call.called_at,
                model=name[:128],
                model_version=served.version if served else None,
                role=served.role if served else None,
                caller=call.caller,
                entity_key=instance.key if instance else entity,
                status_code=status,
                latency_ms=seconds * 1000.0,
                identifiers=instance.ids if instance else {},
                request_features=json_safe(instance.features) if instance else {},
                features=values,
                features_hash=features_hash(values) if features else None,
                feature_views=feature_views or {},
                error=error,
                prediction=prediction,
            )
        )
        label = name if name == self.model else UNKNOWN_MODEL
        self.metrics.observe(
            label,
            served.version if served else None,
            served.role if served else None,
            status,
            seconds,
        )

    def instances(self, bodies: Sequence[BaseModel]) -> list[Instance]:
        """The validated request bodies as instances.

        Args:
            bodies: ``api.request`` objects.

        Returns:
            One instance per body.
        """
        result = []
        for body in bodies:
            entity = body.entity.model_dump()  # type: ignore[attr-defined]
            result.append(
                Instance(
                    entity=entity,
                    features=body.features.model_dump(),  # type: ignore[attr-defined]
                    ids=body.ids.model_dump(exclude_none=True),  # type: ignore[attr-defined]
                    key=entity_key(entity),
                )
            )
        return result

    def predict(self, instances: list[Instance], call: CallStart) -> list[dict[str, Any]]:
        """Answer calls: online features, routing, the model, one trail record each.

        Args:
            instances: The calls (one for a single prediction).
            call: The HTTP request's arrival; a batch's instances get ids of their own.

        Returns:
            One answer per instance (``api.response``'s fields).

        Raises:
            ServingError: No servable version or the online store is down (503), an entity is
                not in the online store (404), the model failed (500); all recorded.
        """
        # The request's id is the first call's; a batch's other instances get their own.
        ids = [call.request_id, *(new_request_id() for _ in instances[1:])]
        serving = self.watcher.current
        if serving.champion is None:
            detail = f"no servable version of '{self.model}': " + "; ".join(serving.problems)
            self._fail_all(instances, ids, call, 503, detail)
        try:
            rows = self.online.lookup(serving.online, [i.entity for i in instances])
        except OnlineStoreError as error:
            detail = f"the online feature store could not be read: {error}; retry later"
            self._fail_all(instances, ids, call, 503, detail)
        missing = {
            n: self._absent(i, row) for n, (i, row) in enumerate(zip(instances, rows, strict=True))
        }
        missing = {n: text for n, text in missing.items() if text}
        if missing:
            self._refuse_absent(instances, ids, call, missing)
        return self._answer(instances, ids, rows, serving, call)

    def _answer(
        self,
        instances: list[Instance],
        ids: list[str],
        rows: list[OnlineRow],
        serving: Serving,
        call: CallStart,
    ) -> list[dict[str, Any]]:
        """Route each instance, predict per version, record and build the answers."""
        import pandas as pd

        assert serving.champion is not None
        values = [{**i.features, **row.values} for i, row in zip(instances, rows, strict=True)]
        groups: dict[str, tuple[ServedVersion, list[int]]] = {}
        for n, instance in enumerate(instances):
            served = serving.champion
            canary = serving.canary
            if (
                canary is not None
                and route(self.model, instance.key, serving.canary_share) == CANARY
            ):
                served = canary
            groups.setdefault(served.version, (served, []))[1].append(n)
        predictions: list[Any] = [None] * len(instances)
        served_by: list[ServedVersion] = [serving.champion] * len(instances)
        for served, members in groups.values():
            frame = pd.DataFrame({c: [values[n].get(c) for n in members] for c in self.inputs})
            try:
                output = served.model.predict(frame)
            except Exception as error:  # a model bug is a 500, recorded, never a crash
                LOGGER.exception("%s v%s failed to predict", self.model, served.version)
                detail = f"v{served.version} failed to predict ({type(error).__name__})"
                self._fail_all(instances, ids, call, 500, detail)
            for position, n in enumerate(members):
                answer = output[position]
                predictions[n] = [float(p) for p in answer] if self._multiclass else float(answer)
                served_by[n] = served
        views = serving.online.fingerprints
        answers = []
        for n, instance in enumerate(instances):
            prediction = json_safe(predictions[n])
            self.record(
                call,
                request_id=ids[n],
                status=200,
                instance=instance,
                served=served_by[n],
                features={c: values[n].get(c) for c in self.inputs},
                feature_views=views,
                prediction=prediction,
            )
            answers.append(
                {
                    "request_id": ids[n],
                    "model": self.model,
                    "model_version": served_by[n].version,
                    "role": served_by[n].role,
                    "prediction": prediction,
                }
            )
        self._log(call, answers, 200)
        return answers

    def _absent(self, instance: Instance, row: OnlineRow) -> str | None:
        """Why an entity cannot be scored (join keys the store knows nothing of), or None."""
        if not row.unknown:
            return None
        parts = []
        for keys, views in row.unknown.items():
            shown = ", ".join(f"{k}={instance.entity.get(k)!r}" for k in keys)
            parts.append(f"{shown} (feature views {views} have no row)")
        return (
            f"unknown entity: {'; '.join(parts)} in the online store; check the keys, or "
            "materialize those views if the entity is new"
        )

    def _refuse_absent(
        self, instances: list[Instance], ids: list[str], call: CallStart, missing: dict[int, str]
    ) -> NoReturn:
        """Record and raise the 404 of entities absent from the online store."""
        if len(instances) == 1:
            detail = missing[0]
        else:
            detail = "; ".join(f"instances[{n}]: {text}" for n, text in sorted(missing.items()))
        for n, instance in enumerate(instances):
            error = missing.get(n) or (
                f"not answered: instances {sorted(missing)} of the batch are not in the online "
                "store"
            )
            self.record(call, request_id=ids[n], status=404, error=error, instance=instance)
        self._log(call, [], 404)
        raise ServingError(404, detail, call.request_id, ids)

    def _fail_all(
        self, instances: list[Instance], ids: list[str], call: CallStart, status: int, detail: str
    ) -> NoReturn:
        """Record every instance as failed with ``status`` and raise it."""
        for n, instance in enumerate(instances):
            self.record(call, request_id=ids[n], status=status, error=detail, instance=instance)
        self._log(call, [], status)
        raise ServingError(status, detail, call.request_id, ids)

    def _log(self, call: CallStart, answers: list[dict[str, Any]], status: int) -> None:
        """One access log line per HTTP request: id, caller, status, versions, latency."""
        versions = sorted({f"v{a['model_version']}:{a['role']}" for a in answers})
        ACCESS_LOGGER.info(
            "%s caller=%s model=%s status=%d calls=%d versions=%s latency_ms=%.1f",
            call.request_id,
            call.caller,
            self.model,
            status,
            max(len(answers), 1),
            ",".join(versions) or "-",
            (time.perf_counter() - call.started) * 1000.0,
        )


def _model_in_path(path: str) -> str:
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
            model=_model_in_path(scope["path"]) or self.service.model,
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


def _validation_detail(errors: Sequence[Any]) -> str:
    """The fields a body got wrong, for the trail (the values sent are left out)."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed body"


def _body_entity(body: Any) -> str:
    """The canonical JSON of a malformed body's entity, when it holds one, else ``{}``."""
    if isinstance(body, dict) and isinstance(body.get("entity"), dict):
        return canonical_json(body["entity"])[:2000]
    return "{}"


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
    api: ApiModels = service.api
    model = service.model

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
        lifespan=lifespan,
    )
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": api.error, "description": "Missing or invalid API key."},
        404: {"model": api.error, "description": "The entity is not in the online store."},
        503: {"model": api.error, "description": "No servable version, or the store is down."},
    }
    security = {"security": [{"bearerAuth": []}, {"apiKeyHeader": []}]}

    def json_response(content: Any, status: int, request_id: str) -> PlainResponse:
        return PlainResponse(
            json.dumps(content, separators=(",", ":")),
            status_code=status,
            media_type="application/json",
            headers={"X-Request-ID": request_id},
        )

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
        return json_response(content, 200, call.request_id)

    # Coroutines answering inline: the work holds the GIL whichever thread runs it, and a hop
    # to the thread pool and back cost every call about a millisecond on 2 cores.
    async def predict(body: BaseModel, request: Request) -> PlainResponse:
        return answer(request, [body], batch=False)

    async def predict_batch(body: BaseModel, request: Request) -> PlainResponse:
        return answer(request, body.instances, batch=True)  # type: ignore[attr-defined]

    app.post(
        f"{API_PREFIX}{model}/predict",
        response_model=api.response,
        responses=errors,
        summary=f"Predict with {model}",
        description="One call: the entity's join keys and request-time features in, the "
        "prediction, the version that answered and the call's id out.",
        openapi_extra=security,
        tags=[model],
    )(_with_body(predict, api.request))
    app.post(
        f"{API_PREFIX}{model}/predict/batch",
        response_model=api.batch_response,
        responses=errors,
        summary=f"Predict with {model}, several calls at once",
        description="Each instance is its own call in the trail, routed by its own entity. "
        "The batch is answered whole: one entity missing from the online store makes it a 404 "
        "naming the instances.",
        openapi_extra=security,
        tags=[model],
    )(_with_body(predict_batch, api.batch_request))

    def unknown_model(name: str, request: Request) -> PlainResponse:
        call: CallStart = request.state.call
        detail = f"unknown model '{name}': this service serves '{model}' at {API_PREFIX}{model}/"
        service.record(call, model=name, status=404, error=detail)
        service._log(call, [], 404)
        raise ServingError(404, detail, call.request_id)

    app.post(f"{API_PREFIX}{{name}}/predict", include_in_schema=False)(unknown_model)
    app.post(f"{API_PREFIX}{{name}}/predict/batch", include_in_schema=False)(unknown_model)

    @app.exception_handler(ServingError)
    async def serving_error(_: Request, error: ServingError) -> PlainResponse:
        content: dict[str, Any] = {"detail": error.detail, "request_id": error.request_id}
        if len(error.request_ids) > 1:
            content["request_ids"] = error.request_ids
        return json_response(content, error.status, error.request_id)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> PlainResponse:
        call: CallStart | None = getattr(request.state, "call", None)
        problems = jsonable_encoder(error.errors())
        if call is None:  # not a model call
            return JSONResponse({"detail": problems}, status_code=422)
        detail = _validation_detail(problems)
        content: dict[str, Any] = {"detail": problems, "request_id": call.request_id}
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type:
            content["hint"] = JSON_HINT
            detail = f"{JSON_HINT}; {detail}"
        name = _model_in_path(request.url.path)
        service.record(call, model=name, status=422, error=detail, entity=_body_entity(error.body))
        service._log(call, [], 422)
        return json_response(content, 422, call.request_id)

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
        service.metrics.set_backlog(model, service.trail.backlog)
        body, content_type = service.metrics.render()
        return PlainResponse(body, media_type=content_type)

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

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.service = service
    app.add_middleware(AccessMiddleware, service=service)  # type: ignore[arg-type]
    return app
