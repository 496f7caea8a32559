"""One SQLAlchemy engine per database URL, shared by the audit log and the leases."""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

SQLITE_BUSY_SECONDS = 60
"""How long a SQLite writer waits for another writer's commit (its busy timeout) before failing."""


@functools.cache
def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A connection per use: a pooled SQLite connection would keep writing to a database
        # file that was replaced or removed (a restored backup, a new home at the same path).
        # A writer waits for a concurrent transaction's commit rather than failing at once.
        return sa.create_engine(
            url, poolclass=sa.pool.NullPool, connect_args={"timeout": SQLITE_BUSY_SECONDS}
        )
    return sa.create_engine(url, pool_pre_ping=True)


@functools.cache
def _create_tables(url: str, metadata: sa.MetaData) -> None:
    metadata.create_all(_engine(url), checkfirst=True)


def engine_with(url: str, metadata: sa.MetaData) -> sa.Engine:
    """The process's engine for ``url``, with ``metadata``'s tables created once per process.

    Args:
        url: A SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg2://...``).
        metadata: The tables the caller uses.

    Returns:
        The engine: SQLite without a pool and with a long busy timeout; others with pre-ping.
    """
    _create_tables(url, metadata)
    return _engine(url)


def ensure_named_row(engine: sa.Engine, table: sa.Table, name: str) -> None:
    """Insert ``table``'s row ``name`` if it is missing, so a transaction can lock it by UPDATE.

    Args:
        engine: The database.
        table: A table whose primary key is a ``name`` column (locks, leases).
        name: The row's name.
    """
    with engine.connect() as connection:
        found = connection.execute(sa.select(table.c.name).where(table.c.name == name)).first()
    if found is not None:
        return
    try:
        with engine.begin() as connection:
            connection.execute(sa.insert(table).values(name=name))
    except IntegrityError:
        pass  # another writer inserted it first: the row is there either way
