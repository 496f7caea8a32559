"""The per-call audit trail of the prediction service: the ``prediction_calls`` table and queries.

Every call the service answers, failed ones included, is one row: who called (the API key's
name, never the key), when, which model version in which role, on which entity and feature values
(their hash and the Feast feature views' fingerprints too), with what result and latency. The
service writes rows through ``ml_platform.serving.journal.CallTrail`` (a write-ahead journal,
batched into this table); ``query_calls`` answers "who called which version, when, on which data,
with what result", and ``calls_frame`` turns successful calls into the shape of batch predictions,
so the drift report can judge online traffic (``monitoring.source: calls``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ml_platform.core.database import engine_with

if TYPE_CHECKING:
    import pandas as pd

_METADATA = sa.MetaData()
PREDICTION_CALLS = sa.Table(
    "prediction_calls",
    _METADATA,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("called_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model", sa.String(128), nullable=False, index=True),
    sa.Column("model_version", sa.String(64)),
    sa.Column("role", sa.String(32)),
    sa.Column("caller", sa.String(200), nullable=False),
    sa.Column("entity_key", sa.Text, nullable=False, index=True),
    sa.Column("identifiers", sa.JSON(none_as_null=True)),
    sa.Column("request_features", sa.JSON(none_as_null=True)),
    sa.Column("features", sa.JSON(none_as_null=True)),
    sa.Column("features_hash", sa.String(64)),
    sa.Column("feature_views", sa.JSON(none_as_null=True)),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("prediction", sa.JSON(none_as_null=True)),
    sa.Column("latency_ms", sa.Float, nullable=False),
)

UNAUTHENTICATED = "unauthenticated"
"""The caller recorded for a call without a valid API key."""


@dataclass(frozen=True)
class CallRecord:
    """One call of the prediction service, as the ``prediction_calls`` table keeps it.

    Attributes:
        request_id: The id the response carried (unique; the table's key).
        called_at: When the call arrived (UTC).
        model: The model called.
        model_version: The version that answered; None when the call failed before routing.
        role: ``champion`` or ``canary``; None when no version answered.
        caller: The API key's name, or ``unauthenticated``; never the key itself.
        entity_key: The entity's join keys as canonical JSON (`entity_key`), ``{}`` if unknown.
        identifiers: Ids the caller sent to join labels later (e.g. ``transaction_id``).
        request_features: The request-time features as sent.
        features: Every model input value used, by input name.
        features_hash: sha256 of the canonical JSON of ``features`` (`features_hash`).
        feature_views: Feast feature view -> fingerprint of the definition served.
        status_code: The HTTP status answered.
        error: What went wrong, for a failed call.
        prediction: The model's output: a number, or a list (one per class); None on error.
        latency_ms: Time from arrival to answer, in milliseconds.
    """

    request_id: str
    called_at: datetime
    model: str
    model_version: str | None
    role: str | None
    caller: str
    entity_key: str
    status_code: int
    latency_ms: float
    identifiers: dict[str, Any] = field(default_factory=dict)
    request_features: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    features_hash: str | None = None
    feature_views: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    prediction: float | list[float] | None = None

    @property
    def entity(self) -> dict[str, Any]:
        """The entity's join keys (parsed ``entity_key``)."""
        return json.loads(self.entity_key) if self.entity_key else {}

    @property
    def succeeded(self) -> bool:
        """Whether the call was answered with a prediction (a 2xx status)."""
        return 200 <= self.status_code < 300 and self.prediction is not None


def _plain(value: Any) -> Any:
    """A JSON-ready value for numpy scalars and arrays, timestamps and other non-JSON types."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if hasattr(value, "isoformat"):  # datetime, pandas Timestamp
        return value.isoformat()
    return str(value)


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, numpy values as plain ones.

    Args:
        value: A JSON-like value (dicts, lists, numbers, strings, None).

    Returns:
        The same text for the same content, whatever the key order.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def entity_key(entity: Mapping[str, Any]) -> str:
    """The canonical JSON of an entity's join keys, e.g. ``{"applicant_id":7}``.

    Args:
        entity: Join key -> value.

    Returns:
        Sorted keys, no spaces: equal entities give equal text (the trail's entity filter).
    """
    return canonical_json(dict(entity))


def features_hash(features: Mapping[str, Any]) -> str:
    """The sha256 (hex) of the canonical JSON of a call's feature values.

    Args:
        features: Every model input value used, by input name.

    Returns:
        64 hex digits: two calls with the same values have the same hash.
    """
    return hashlib.sha256(canonical_json(dict(features)).encode()).hexdigest()


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON, and Postgres, have no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; SQLite hands back naive datetimes, written in UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC)


def calls_engine(audit_url: str) -> sa.Engine:
    """The audit database's engine, with the ``prediction_calls`` table created if missing.

    Args:
        audit_url: The audit database URL (``settings.audit_url``).

    Returns:
        The engine.
    """
    return engine_with(audit_url, _METADATA)


def _entity_fragments(name: str, value: Any) -> list[str]:
    """The canonical-JSON texts of ``"name":value`` that match ``value`` (7 also matches "7")."""
    forms = {canonical_json(value)}
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, int | float) and not isinstance(parsed, bool):
            forms.add(canonical_json(parsed))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        forms.add(canonical_json(str(value)))
    return [f"{canonical_json(name)}:{form}" for form in sorted(forms)]


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _entity_condition(entity: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    """Rows whose entity has every given key with the given value (other keys may differ).

    In canonical JSON with scalar values a pair ``"key":value`` is followed by ``,`` or by the
    closing ``}``; matching both keeps ``7`` from matching ``70``.
    """
    column = PREDICTION_CALLS.c.entity_key
    conditions = []
    for name, value in entity.items():
        alternatives = []
        for fragment in _entity_fragments(name, value):
            escaped = _like_escaped(fragment)
            alternatives += [
                column.like(f"%{escaped},%", escape="\\"),
                column.like(f"%{escaped}}}", escape="\\"),
            ]
        conditions.append(sa.or_(*alternatives))
    return sa.and_(*conditions)


def _record(row: sa.RowMapping) -> CallRecord:
    values = dict(row)
    values["called_at"] = utc(values["called_at"])
    for name in ("identifiers", "request_features", "features", "feature_views"):
        values[name] = values[name] or {}
    return CallRecord(**values)


def query_calls(
    audit_url: str,
    model: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    entity: Mapping[str, Any] | None = None,
    caller: str | None = None,
    version: str | None = None,
    request_id: str | None = None,
    limit: int | None = 1000,
) -> list[CallRecord]:
    """The recorded calls of ``model`` that match every given filter: the newest, oldest first.

    Args:
        audit_url: The audit database URL (``settings.audit_url``).
        model: The model called.
        start: The first call time included (UTC when naive).
        end: The first call time excluded (UTC when naive).
        entity: Join keys and values the call's entity has (a subset of its keys is enough;
            ``7`` and ``"7"`` both match either form).
        caller: The API key name (or ``unauthenticated``).
        version: The model version that answered.
        request_id: One call's id.
        limit: At most this many calls, the newest ones; None for all.

    Returns:
        The calls, in the order they arrived.
    """
    table = PREDICTION_CALLS
    query = sa.select(table).where(table.c.model == model)
    if start is not None:
        query = query.where(table.c.called_at >= utc(start))
    if end is not None:
        query = query.where(table.c.called_at < utc(end))
    if entity:
        query = query.where(_entity_condition(entity))
    if caller is not None:
        query = query.where(table.c.caller == caller)
    if version is not None:
        query = query.where(table.c.model_version == str(version))
    if request_id is not None:
        query = query.where(table.c.request_id == request_id)
    query = query.order_by(table.c.called_at.desc(), table.c.request_id.desc())
    if limit is not None:
        query = query.limit(limit)
    with calls_engine(audit_url).connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [_record(row) for row in reversed(rows)]


def calls_frame(
    audit_url: str,
    model: str,
    start: datetime | None,
    end: datetime | None,
    *,
    timestamp_column: str = "called_at",
) -> pd.DataFrame:
    """The successful calls of ``model`` in a time range, shaped like batch predictions.

    One row per call: the entity's join keys, the caller's identifiers, every model input used,
    ``score`` (or ``score_<i>`` per class), ``model_version``, ``scored_at`` (the call time),
    the call time again under ``timestamp_column``, and ``request_id``, ``role`` and ``caller``.
    The drift report judges it as it judges a predictions file.

    Args:
        audit_url: The audit database URL (``settings.audit_url``).
        model: The model called.
        start: The first call time included (UTC when naive); None: from the first call.
        end: The first call time excluded; None: up to now.
        timestamp_column: The model's timestamp column (``ResolvedFeatures.timestamp_column``).

    Returns:
        The frame, empty (with the fixed columns) when no call succeeded in the range.
    """
    import pandas as pd

    table = PREDICTION_CALLS
    query = (
        sa.select(
            table.c.request_id,
            table.c.called_at,
            table.c.model_version,
            table.c.role,
            table.c.caller,
            table.c.entity_key,
            table.c.identifiers,
            table.c.features,
            table.c.prediction,
        )
        .where(
            table.c.model == model,
            table.c.status_code >= 200,
            table.c.status_code < 300,
            table.c.prediction.is_not(None),
        )
        .order_by(table.c.called_at, table.c.request_id)
    )
    if start is not None:
        query = query.where(table.c.called_at >= utc(start))
    if end is not None:
        query = query.where(table.c.called_at < utc(end))
    with calls_engine(audit_url).connect() as connection:
        rows = connection.execute(query).mappings().all()
    records = []
    for row in rows:
        called_at = utc(row["called_at"])
        values: dict[str, Any] = {
            **(row["identifiers"] or {}),
            **json.loads(row["entity_key"] or "{}"),
            **(row["features"] or {}),
        }
        prediction = row["prediction"]
        if isinstance(prediction, list):
            values.update({f"score_{i}": p for i, p in enumerate(prediction)})
        else:
            values["score"] = prediction
        values.update(
            {
                timestamp_column: called_at,
                "model_version": row["model_version"],
                "scored_at": called_at,
                "request_id": row["request_id"],
                "role": row["role"],
                "caller": row["caller"],
            }
        )
        records.append(values)
    fixed = [timestamp_column, "score", "model_version", "scored_at", "request_id"]
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame({c: [] for c in fixed})
    for column in (timestamp_column, "scored_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
