"""Append-only audit trail of what the platform did to each model (SQLite or Postgres)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

_METADATA = sa.MetaData()
AUDIT_EVENTS = sa.Table(
    "audit_events",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model", sa.String(128), nullable=False, index=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("model_version", sa.String(32)),
    sa.Column("data_snapshot_id", sa.String(64)),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("rows", sa.BigInteger),
    sa.Column("details", sa.Text, nullable=False, default="{}"),
)


@functools.cache
def _engine(url: str) -> sa.Engine:
    """One engine per database, its tables created once per process."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A connection per use: a pooled SQLite connection would keep writing to a database
        # file that was replaced or removed (a restored backup, a new home at the same path).
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    _METADATA.create_all(engine, checkfirst=True)
    return engine


@dataclass(frozen=True)
class AuditEvent:
    """One recorded action on a model: what, when, which version and data, which run."""

    recorded_at: datetime
    model: str
    action: str
    model_version: str | None
    data_snapshot_id: str | None
    dagster_run_id: str | None
    rows: int | None
    details: dict[str, Any]


class AuditLog:
    """Records events such as ``trained``, ``promoted``, ``not_promoted`` and ``scored``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            # The database file was removed since the engine was made (a new home): recreate.
            _METADATA.create_all(self.engine, checkfirst=True)

    def record(
        self,
        model: str,
        action: str,
        *,
        model_version: str | None = None,
        data_snapshot_id: str | None = None,
        dagster_run_id: str | None = None,
        rows: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        event = AuditEvent(
            recorded_at=datetime.now(UTC),
            model=model,
            action=action,
            model_version=model_version,
            data_snapshot_id=data_snapshot_id,
            dagster_run_id=dagster_run_id,
            rows=rows,
            details=details or {},
        )
        values = {**event.__dict__, "details": json.dumps(event.details, default=str)}
        with self.engine.begin() as connection:
            connection.execute(AUDIT_EVENTS.insert().values(**values))
        return event

    def events(self, model: str, action: str | None = None) -> list[AuditEvent]:
        """Events of ``model``, oldest first."""
        query = sa.select(AUDIT_EVENTS).where(AUDIT_EVENTS.c.model == model)
        if action is not None:
            query = query.where(AUDIT_EVENTS.c.action == action)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(AUDIT_EVENTS.c.id)).mappings().all()
        return [
            AuditEvent(
                **{k: v for k, v in row.items() if k not in ("id", "details")},
                details=json.loads(row["details"]),
            )
            for row in rows
        ]
