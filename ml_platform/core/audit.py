"""Append-only audit trail of what the platform did to each model (SQLite or Postgres).

``AuditLog.exclusive`` also serializes a critical section across processes and machines (moving
the ``champion`` alias): it holds a database lock on the audit database, and the events recorded
inside it commit with the section, or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ml_platform.core.database import engine_with, ensure_named_row

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
AUDIT_LOCKS = sa.Table(
    "audit_locks",
    _METADATA,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("taken_at", sa.DateTime(timezone=True)),
)


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


def _insert(connection: sa.Connection, event: AuditEvent) -> None:
    values = {**event.__dict__, "details": json.dumps(event.details, default=str)}
    connection.execute(AUDIT_EVENTS.insert().values(**values))


def _select(
    connection: sa.Connection, model: str, actions: Collection[str] | None
) -> list[AuditEvent]:
    query = sa.select(AUDIT_EVENTS).where(AUDIT_EVENTS.c.model == model)
    if actions is not None:
        query = query.where(AUDIT_EVENTS.c.action.in_(list(actions)))
    rows = connection.execute(query.order_by(AUDIT_EVENTS.c.id)).mappings().all()
    return [
        AuditEvent(
            **{k: v for k, v in row.items() if k not in ("id", "details")},
            details=json.loads(row["details"]),
        )
        for row in rows
    ]


def _actions(action: str | None, actions: Collection[str] | None) -> Collection[str] | None:
    if action is not None and actions is not None:
        raise ValueError("give action or actions, not both")
    return [action] if action is not None else actions


def _event(
    model: str,
    action: str,
    model_version: str | None,
    data_snapshot_id: str | None,
    dagster_run_id: str | None,
    rows: int | None,
    details: dict[str, Any] | None,
) -> AuditEvent:
    return AuditEvent(
        recorded_at=datetime.now(UTC),
        model=model,
        action=action,
        model_version=model_version,
        data_snapshot_id=data_snapshot_id,
        dagster_run_id=dagster_run_id,
        rows=rows,
        details=details or {},
    )


class AuditSection:
    """The audit log inside ``AuditLog.exclusive``: reads and writes on the section's connection.

    What is recorded here commits when the section ends without an error, and is rolled back
    otherwise. (A second connection would wait for this one's lock on SQLite: use this one.)
    """

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection

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
        """Record an event, committed with the section (see ``AuditLog.record``).

        Args:
            model: The model the event is about.
            action: What happened (``promoted``, ``not_promoted``...).
            model_version: The version concerned, if any.
            data_snapshot_id: The data concerned, if any.
            dagster_run_id: The Dagster run that did it, if any.
            rows: Rows concerned, if any.
            details: Structured facts (JSON-serializable).

        Returns:
            The event.
        """
        event = _event(
            model, action, model_version, data_snapshot_id, dagster_run_id, rows, details
        )
        _insert(self.connection, event)
        return event

    def events(
        self, model: str, action: str | None = None, *, actions: Collection[str] | None = None
    ) -> list[AuditEvent]:
        """Events of ``model``, oldest first, those recorded in this section included.

        Args:
            model: The model.
            action: Only events of this action.
            actions: Only events of these actions.

        Returns:
            The events.
        """
        return _select(self.connection, model, _actions(action, actions))


class AuditLog:
    """Records events such as ``trained``, ``promoted``, ``not_promoted`` and ``scored``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_with(url, _METADATA)
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
        """Record an event in its own transaction.

        Args:
            model: The model the event is about (``platform`` for none).
            action: What happened (``trained``, ``promoted``, ``scored``...).
            model_version: The version concerned, if any.
            data_snapshot_id: The data concerned, if any.
            dagster_run_id: The Dagster run that did it, if any.
            rows: Rows concerned, if any.
            details: Structured facts (JSON-serializable).

        Returns:
            The event.
        """
        event = _event(
            model, action, model_version, data_snapshot_id, dagster_run_id, rows, details
        )
        with self.engine.begin() as connection:
            _insert(connection, event)
        return event

    def events(
        self, model: str, action: str | None = None, *, actions: Collection[str] | None = None
    ) -> list[AuditEvent]:
        """Events of ``model``, oldest first.

        Args:
            model: The model.
            action: Only events of this action.
            actions: Only events of these actions.

        Returns:
            The events.
        """
        with self.engine.connect() as connection:
            return _select(connection, model, _actions(action, actions))

    @contextmanager
    def exclusive(self, name: str) -> Iterator[AuditSection]:
        """Run the block while holding the database lock ``name``; one holder at a time.

        The section is one transaction whose first statement updates the lock's row in
        ``audit_locks``: SQLite takes its database write lock there, Postgres locks the row; both
        hold it until commit, so holders of one name anywhere go one after the other (SQLite
        waiters wait up to its busy timeout). Events recorded through the yielded section commit
        with it when the block ends, and roll back if it raises.

        Args:
            name: The lock, e.g. ``champion:<model>``.

        Yields:
            The section: the audit log on the locked connection.
        """
        ensure_named_row(self.engine, AUDIT_LOCKS, name)
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(AUDIT_LOCKS)
                .where(AUDIT_LOCKS.c.name == name)
                .values(taken_at=datetime.now(UTC))
            )
            yield AuditSection(connection)
