"""One model's prediction service: versions, online features, routing, the call trail.

``PredictionService`` answers the calls the HTTP app (``serving.app``) hands it: it reads the
features the call does not send from the Feast online store (the training set's own references),
routes the entity to the champion or the canary (sticky, ``routing``), predicts, and records
every call, refused and failed ones included, in the call trail (``serving.journal.CallTrail``:
in the write-ahead journal before the answer leaves) with its caller (the API key's name), the
feature values used, the views' fingerprints, the result and the latency. A call it cannot answer
raises ``ServingError`` with the HTTP status and what was wrong, already recorded.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.registry.client import ModelRegistry
from ml_platform.serving.auth import ApiKeys
from ml_platform.serving.calls import CallRecord, entity_key, features_hash, json_safe
from ml_platform.serving.features import OnlineFeatures, OnlineRow, OnlineStoreError
from ml_platform.serving.metrics import ServingMetrics
from ml_platform.serving.routing import CANARY, route
from ml_platform.serving.schema import api_models, view_join_keys
from ml_platform.serving.versions import ServedVersion, Serving, VersionWatcher
from ml_platform.spec.catalog import Catalog, ResolvedFeatures
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ml_platform.serving.journal import CallTrail

ACCESS_LOGGER = logging.getLogger("ml_platform.serving.access")
LOGGER = logging.getLogger("ml_platform.serving")
UNKNOWN_MODEL = "unknown"  # the metrics label of a model name the service does not serve


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


def new_request_id() -> str:
    """A new call id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


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
