"""Named leases on the audit database: at most one holder of a name at a time (SQLite or Postgres).

The training step holds ``train:<model>`` while it trains, whatever launched its run (job, asset
selection in the UI, schedule, sensor, automation), on any Dagster instance configuration. A
lease is taken in one transaction whose first statement is an UPDATE of the lease's row: SQLite
takes its database write lock there and Postgres locks the row, so two takers are serialized by
the database itself and the second one sees the first one's holder. A holder that died without
releasing (a killed process) does not block forever: the caller's ``is_alive`` says whether the
holder still runs (for a Dagster run: not finished), and a dead holder's lease is taken over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from ml_platform.core.database import engine_with, ensure_named_row

_METADATA = sa.MetaData()
LEASES = sa.Table(
    "leases",
    _METADATA,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200)),
    sa.Column("acquired_at", sa.DateTime(timezone=True)),
)


def training_lease(model: str) -> str:
    """The name of the lease a training of ``model`` holds.

    Args:
        model: The model's name.

    Returns:
        ``train:<model>``.
    """
    return f"train:{model}"


@dataclass(frozen=True)
class Lease:
    """Who holds a lease and since when.

    Attributes:
        name: The lease's name, e.g. ``train:loans``.
        holder: The holder's id (a Dagster run id).
        acquired_at: When the holder took it (UTC).
    """

    name: str
    holder: str
    acquired_at: datetime


class LeaseHeld(RuntimeError):
    """The lease is held by another holder that is alive.

    Attributes:
        lease: The holder and since when it holds the lease.
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        super().__init__(
            f"lease '{lease.name}' is held by {lease.holder} since "
            f"{lease.acquired_at.isoformat(timespec='seconds')}"
        )


class Leases:
    """The lease table of one database (the platform's ``audit_url``)."""

    def __init__(self, url: str) -> None:
        """Open the lease table, creating it if needed.

        Args:
            url: A SQLAlchemy URL (SQLite or Postgres).
        """
        self.engine = engine_with(url, _METADATA)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            # The database file was removed since the engine was made (a new home): recreate.
            _METADATA.create_all(self.engine, checkfirst=True)

    def acquire(self, name: str, holder: str, is_alive: Callable[[str], bool]) -> Lease:
        """Take the lease ``name`` for ``holder``.

        It is taken when free, when ``holder`` already holds it (a retry of the same run keeps
        it) or when its holder is no longer alive.

        Args:
            name: The lease, e.g. ``training_lease(model)``.
            holder: Who takes it (a Dagster run id).
            is_alive: Whether another holder still runs; called with that holder's id while the
                lease's row is locked.

        Returns:
            The lease now held by ``holder``.

        Raises:
            LeaseHeld: Another holder that is alive holds it.
        """
        ensure_named_row(self.engine, LEASES, name)
        with self.engine.begin() as connection:
            # First statement: the write that locks the row (Postgres) or the database
            # (SQLite) until commit, so concurrent takers go one after the other.
            connection.execute(
                sa.update(LEASES).where(LEASES.c.name == name).values(name=LEASES.c.name)
            )
            row = connection.execute(
                sa.select(LEASES.c.holder, LEASES.c.acquired_at).where(LEASES.c.name == name)
            ).one()
            current, since = row.holder, row.acquired_at
            if current == holder and since is not None:
                return Lease(name, holder, _utc(since))
            if current is not None and since is not None and is_alive(current):
                raise LeaseHeld(Lease(name, current, _utc(since)))
            now = datetime.now(UTC)
            connection.execute(
                sa.update(LEASES)
                .where(LEASES.c.name == name)
                .values(holder=holder, acquired_at=now)
            )
        return Lease(name, holder, now)

    def release(self, name: str, holder: str) -> bool:
        """Give the lease back if ``holder`` holds it.

        Args:
            name: The lease.
            holder: Who gives it back.

        Returns:
            Whether ``holder`` held it (and so released it).
        """
        with self.engine.begin() as connection:
            released = connection.execute(
                sa.update(LEASES)
                .where(LEASES.c.name == name, LEASES.c.holder == holder)
                .values(holder=None, acquired_at=None)
            )
        return released.rowcount > 0

    def current(self, name: str) -> Lease | None:
        """Who holds ``name`` now, if anyone (whether alive or not).

        Args:
            name: The lease.

        Returns:
            The lease, or None when nobody holds it.
        """
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(LEASES.c.holder, LEASES.c.acquired_at).where(LEASES.c.name == name)
            ).one_or_none()
        if row is None or row.holder is None or row.acquired_at is None:
            return None
        return Lease(name, row.holder, _utc(row.acquired_at))

    @contextmanager
    def held(self, name: str, holder: str, is_alive: Callable[[str], bool]) -> Iterator[Lease]:
        """Hold the lease for the duration of the block; it is released however the block ends.

        Args:
            name: The lease.
            holder: Who takes it.
            is_alive: Whether another holder still runs (see `acquire`).

        Yields:
            The lease held.

        Raises:
            LeaseHeld: Another holder that is alive holds it.
        """
        lease = self.acquire(name, holder, is_alive)
        try:
            yield lease
        finally:
            self.release(name, holder)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
