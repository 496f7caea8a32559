"""``CallTrail``: the service's calls, durable before the answer, batched into the audit database.

``record`` appends one JSON line to the current journal segment, a file opened with O_APPEND, with
one ``os.write`` under a lock, and returns: a call it acknowledged survives a killed process (the
bytes are in the kernel), and with ``fsync="always"`` a power loss too (``"interval"`` syncs each
segment when it is closed, at most ``flush_interval`` later). A flusher thread closes the current
segment every ``flush_interval`` seconds, inserts its lines into ``prediction_calls`` in batches
(insert-or-ignore by ``request_id``, so a replay never doubles a row), commits, and only then
deletes the segment. When the database is down, calls are still answered and journaled; the flusher
retries with a growing delay and logs it.

Each open trail writes in a directory of its own under ``journal_dir``, locked (``flock``) while the
process lives, so several services may share ``journal_dir``. ``open`` adopts the directories of
trails whose process died (their lock is free) and replays them first; a torn last line (the
process was killed inside ``os.write``) was never acknowledged and is skipped with a warning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import exc

from ml_platform.core.helpers import redact_url, redact_urls
from ml_platform.serving.calls import PREDICTION_CALLS, CallRecord, calls_engine, json_safe

LOGGER = logging.getLogger(__name__)

WRITER_PREFIX = "writer-"
SEGMENT_SUFFIX = ".jsonl"
LOCK_FILE = "lock"
ADOPTED_PREFIX = "0-"
"""Segments taken over from a dead trail (sorted before this trail's own)."""
REJECTED_FILE = "rejected.jsonl"
"""Calls the database refused row by row (not a connection problem), kept with the reason."""
MAX_RETRY_SECONDS = 30.0
"""The longest wait between two attempts to write to a database that is down."""

_FIELDS = tuple(f.name for f in fields(CallRecord))


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def journal_line(call: CallRecord) -> bytes:
    """One call as a journal line: JSON of its fields, ending with a newline.

    Args:
        call: The call.

    Returns:
        UTF-8 bytes of one line (NaN kept as JSON's ``NaN``: it is made None on insert).
    """
    values = dict(call.__dict__)
    values["called_at"] = call.called_at.isoformat()
    return (json.dumps(values, separators=(",", ":"), default=_plain) + "\n").encode()


def row_of(values: dict[str, Any]) -> dict[str, Any]:
    """A journal line's fields as a ``prediction_calls`` row (time parsed, NaN made None)."""
    row = {name: values.get(name) for name in _FIELDS}
    called_at = datetime.fromisoformat(str(row["called_at"]))
    row["called_at"] = called_at if called_at.tzinfo else called_at.replace(tzinfo=UTC)
    for name in ("identifiers", "request_features", "features", "feature_views", "prediction"):
        row[name] = json_safe(row[name])
    return row


@dataclass(frozen=True)
class SegmentLines:
    """The calls read from one journal segment, and the lines that could not be read."""

    rows: list[dict[str, Any]]
    torn_tail: bool
    bad_lines: int


def read_segment(path: Path) -> SegmentLines:
    """The complete lines of a closed segment as rows.

    A last line without its newline (a process killed inside ``os.write``) was never
    acknowledged: it is skipped. A line that is not JSON elsewhere (a disk that lost a block) is
    skipped and counted.

    Args:
        path: The segment file.

    Returns:
        The rows, whether the tail was torn, and how many other lines were unreadable.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # empty when the file ends with a newline
    rows, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rows.append(row_of(json.loads(line)))
        except (ValueError, TypeError, KeyError):
            bad += 1
    return SegmentLines(rows=rows, torn_tail=bool(tail.strip()), bad_lines=bad)


def _insert_statement(engine: sa.Engine) -> Any:
    """An INSERT that skips a row whose ``request_id`` is already there (replays are idempotent)."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        return insert(PREDICTION_CALLS).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert(PREDICTION_CALLS).on_conflict_do_nothing(index_elements=["request_id"])
    return None


def insert_calls(engine: sa.Engine, rows: list[dict[str, Any]], batch_size: int) -> None:
    """Insert rows into ``prediction_calls``, skipping request ids already there; commit per batch.

    Args:
        engine: The audit database.
        rows: ``prediction_calls`` rows.
        batch_size: Rows per INSERT and commit.
    """
    statement = _insert_statement(engine)
    for first in range(0, len(rows), batch_size):
        batch = rows[first : first + batch_size]
        with engine.begin() as connection:
            if statement is not None:
                connection.execute(statement, batch)
                continue
            # Another database: insert only the ids not there yet (one writer per trail).
            ids = [row["request_id"] for row in batch]
            known = set(
                connection.execute(
                    sa.select(PREDICTION_CALLS.c.request_id).where(
                        PREDICTION_CALLS.c.request_id.in_(ids)
                    )
                ).scalars()
            )
            fresh = [row for row in batch if row["request_id"] not in known]
            if fresh:
                connection.execute(sa.insert(PREDICTION_CALLS), fresh)


def _lock(path: Path, *, wait: bool) -> int | None:
    """An exclusive ``flock`` on ``path`` (created if missing); None when another process has it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _unreachable(error: exc.SQLAlchemyError) -> bool:
    """Whether the database could not be reached or used (retry later), not a refused row."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error, exc.OperationalError | exc.InterfaceError | exc.DisconnectionError
    ) or not isinstance(error, exc.DBAPIError)


def _sync_directory(directory: Path) -> None:
    """Make the names in ``directory`` durable (a new file, not only its data)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))


class CallTrail:
    """The write-ahead journal of the service's calls and its batched writer to the audit database.

    Use ``open()`` (or ``with CallTrail(...) as trail``), ``record()`` per call from any thread, and
    ``close()`` at shutdown.
    """

    def __init__(
        self,
        audit_url: str,
        journal_dir: Path,
        *,
        flush_interval: float = 0.2,
        batch_size: int = 500,
        fsync: Literal["interval", "always"] = "interval",
    ) -> None:
        """Prepare the trail; nothing is opened or written before ``open()``.

        Args:
            audit_url: The audit database URL (``settings.audit_url``: SQLite or Postgres).
            journal_dir: Where the journal lives (a local disk; kept across restarts).
            flush_interval: Seconds between two closings of the current segment (at most this
                long before a call is in the database, when the database is up).
            batch_size: Rows per INSERT and commit.
            fsync: ``interval``: a segment is synced when closed (survives a killed process);
                ``always``: every call is synced before ``record`` returns (survives a power
                loss too, at the cost of a disk sync before each answer; calls written while a
                sync runs share the next one).

        Raises:
            ValueError: An argument is out of range.
        """
        if flush_interval <= 0 or batch_size < 1:
            raise ValueError(
                f"CallTrail: flush_interval must be > 0 and batch_size >= 1, got "
                f"{flush_interval} and {batch_size}"
            )
        if fsync not in ("interval", "always"):
            raise ValueError(f"CallTrail: fsync must be 'interval' or 'always', got {fsync!r}")
        self.audit_url = audit_url
        self.journal_dir = Path(journal_dir)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.fsync = fsync
        self._lock = threading.Lock()  # the current segment: writes, swaps
        self._sync_lock = threading.Lock()  # disk syncs; taken before ``_lock``, never after
        self._synced = 0  # calls known to be on disk (``fsync="always"``)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._directory: Path | None = None
        self._dir_lock: int | None = None
        self._descriptor: int | None = None
        self._segment: Path | None = None
        self._sequence = 0
        self._written = 0  # lines in the current segment
        self._closed_segments: list[Path] = []  # closed, not yet in the database, oldest first
        self._pending_lock = threading.Lock()  # one flusher at a time (thread, open, close)
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        """Why the last write to the database failed; None once one succeeded after it."""
        self.recorded = 0
        """Calls journaled since ``open``."""
        self.flushed = 0
        """Calls of this trail written to the database (or found there) since ``open``."""
        self.replayed = 0
        """Calls of dead trails' journals written to the database (or found there)."""

    @property
    def is_open(self) -> bool:
        """Whether calls can be recorded."""
        return self._descriptor is not None

    @property
    def backlog(self) -> int:
        """Calls journaled and not yet in the database (about: read without the lock)."""
        return max(self.recorded - self.flushed, 0)

    def __enter__(self) -> CallTrail:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> CallTrail:
        """Adopt and replay the journals of dead trails, open this one's, start the flusher.

        Leftovers that cannot reach the database now (it is down) stay journaled and are
        retried by the flusher.

        Returns:
            The trail, open.

        Raises:
            OSError: The journal directory cannot be created or written.
        """
        if self.is_open:
            return self
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{WRITER_PREFIX}{stamp}-{os.getpid()}-{secrets.token_hex(4)}"
        directory = self.journal_dir / name
        directory.mkdir()
        self._dir_lock = _lock(directory / LOCK_FILE, wait=True)
        self._directory = directory
        _sync_directory(self.journal_dir)
        adopted = self._adopt_dead_writers()
        self._stopping.clear()
        with self._lock:
            self._open_segment()
        if adopted:
            LOGGER.info(
                "call trail: replaying %d journal segment(s) left by a stopped service", adopted
            )
            self._flush(force=True)
        self._thread = threading.Thread(target=self._run, name="call-trail-flusher", daemon=True)
        self._thread.start()
        return self

    def record(self, call: CallRecord) -> None:
        """Journal one call; it is durable (see the module) when this returns.

        Args:
            call: The call (its ``caller`` is a key's name, never the key).

        Raises:
            RuntimeError: The trail is not open.
            OSError: The journal cannot be written (a full disk): the call is not recorded.
        """
        line = journal_line(call)
        with self._lock:
            descriptor = self._descriptor
            if descriptor is None:
                raise RuntimeError("the call trail is not open; call CallTrail.open() first")
            view = memoryview(line)
            while view:
                view = view[os.write(descriptor, view) :]
            self._written += 1
            self.recorded += 1
            ticket = self.recorded
        if self.fsync == "always":
            self._sync_to(ticket)

    def _sync_to(self, ticket: int) -> None:
        """Return once the first ``ticket`` recorded calls are on disk (``fsync="always"``).

        One disk sync covers every call written before it (group commit): calls that arrive
        while a sync runs wait for the next one, not for one each.
        """
        with self._sync_lock:
            if self._synced >= ticket:
                return
            with self._lock:
                descriptor, recorded = self._descriptor, self.recorded
            if descriptor is not None:  # None: closed, and close synced everything
                os.fdatasync(descriptor)
                self._synced = recorded

    def flush(self) -> None:
        """Write every call journaled so far to the database now (tests, shutdown).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: The database could not be written; the calls stay
                journaled.
        """
        self._rotate()
        self._flush(force=True, raise_errors=True)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the flusher, write what is journaled to the database, close the journal.

        When the database stays down for ``timeout`` seconds, the calls stay in the journal and
        the next ``open`` (of any trail on ``journal_dir``) replays them.

        Args:
            timeout: Seconds to keep retrying the database.
        """
        if not self.is_open:
            return
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._sync_lock:
            with self._lock:
                descriptor, segment, written = self._descriptor, self._segment, self._written
                self._descriptor = self._segment = None
                recorded = self.recorded
            if descriptor is not None and segment is not None:
                self._close_segment(descriptor, segment, written)
            self._synced = recorded
        deadline = time.monotonic() + timeout
        while self._closed_segments:
            self._flush(force=True)
            if not self._closed_segments or time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, self.flush_interval * 2))
        if self._closed_segments:
            LOGGER.error(
                "call trail: %d call(s) not written to %s (%s); they stay journaled under %s and "
                "are written when a service opens this journal again",
                self.backlog,
                redact_url(self.audit_url),
                self.last_error,
                self._directory,
            )
        elif self._directory is not None:
            (self._directory / LOCK_FILE).unlink(missing_ok=True)
            self._directory.rmdir()
        if self._dir_lock is not None:
            os.close(self._dir_lock)
            self._dir_lock = None

    def _open_segment(self) -> None:
        """Continue in the next segment of this trail's directory (under ``_lock``)."""
        assert self._directory is not None
        segment = self._directory / f"{self._sequence + 1:012d}{SEGMENT_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._descriptor = os.open(segment, flags, 0o600)
        self._segment, self._sequence, self._written = segment, self._sequence + 1, 0
        if self.fsync == "always":  # the segment's name, before a call in it is acknowledged
            _sync_directory(self._directory)

    def _rotate(self) -> None:
        """Close the current segment if it holds calls; calls continue in the next one.

        ``record`` waits only for the swap of descriptors: the closed segment is synced after.
        """
        with self._sync_lock:  # a call waiting for its sync may be in the segment closed here
            with self._lock:
                if self._descriptor is None or self._written == 0 or self._segment is None:
                    return
                descriptor, segment, written = self._descriptor, self._segment, self._written
                recorded = self.recorded
                self._open_segment()
            self._close_segment(descriptor, segment, written)
            self._synced = recorded

    def _close_segment(self, descriptor: int, segment: Path, written: int) -> None:
        """Sync and close a segment no call writes to any more; queue it, or drop it if empty."""
        try:
            if written:
                os.fdatasync(descriptor)
                if self.fsync == "interval":  # "always" synced the name when it was created
                    _sync_directory(segment.parent)
        finally:
            os.close(descriptor)
            if written:
                self._closed_segments.append(segment)
            else:
                segment.unlink(missing_ok=True)

    def _adopt_dead_writers(self) -> int:
        """Move the segments of trails whose process died into this trail's directory.

        Returns:
            The segments adopted.
        """
        assert self._directory is not None
        adopted = 0
        for other in sorted(self.journal_dir.glob(f"{WRITER_PREFIX}*")):
            if other == self._directory or not other.is_dir():
                continue
            held = _lock(other / LOCK_FILE, wait=False)
            if held is None:
                continue  # a live trail's directory
            try:
                for segment in _segments(other):
                    target = self._directory / f"{ADOPTED_PREFIX}{other.name}-{segment.name}"
                    segment.rename(target)
                    self._closed_segments.append(target)
                    adopted += 1
                (other / LOCK_FILE).unlink(missing_ok=True)
                other.rmdir()
            finally:
                os.close(held)
        self._closed_segments.sort()
        return adopted

    def _run(self) -> None:
        """The flusher: close the segment every ``flush_interval``, write closed ones."""
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._rotate()
            except OSError as error:  # a full disk: the next call's record() raises it
                LOGGER.error("call trail: cannot rotate the journal: %s", error)
            self._flush(force=False)

    def _flush(self, *, force: bool, raise_errors: bool = False) -> None:
        """Write the closed segments to the database, oldest first; delete each once committed."""
        with self._pending_lock:
            if not force and time.monotonic() < self._retry_at:
                return
            while self._closed_segments:
                segment = self._closed_segments[0]
                try:
                    self._write_segment(segment)
                except Exception as error:  # the flusher must outlive any database failure
                    self._failed(error)
                    if raise_errors:
                        raise
                    return
                self._closed_segments.pop(0)
            if self._failures:
                LOGGER.warning(
                    "call trail: the audit database %s is written again after %d failed attempt(s)",
                    redact_url(self.audit_url),
                    self._failures,
                )
            self._failures, self._retry_at, self.last_error = 0, 0.0, None

    def _write_segment(self, segment: Path) -> None:
        try:
            lines = read_segment(segment)
        except FileNotFoundError:
            return
        if lines.torn_tail:
            LOGGER.warning(
                "call trail: %s ends with a torn line (its process was killed while writing "
                "it; that call was never acknowledged): skipped",
                segment,
            )
        if lines.bad_lines:
            LOGGER.error(
                "call trail: %s has %d unreadable line(s): skipped", segment, lines.bad_lines
            )
        if lines.rows:
            engine = calls_engine(self.audit_url)
            try:
                insert_calls(engine, lines.rows, self.batch_size)
            except exc.SQLAlchemyError as error:
                if _unreachable(error):
                    raise
                # A row the database refuses (not a connection problem) must not hold back
                # every later call: insert one by one and keep the refused ones aside.
                self._insert_one_by_one(engine, lines.rows)
        segment.unlink()
        if segment.name.startswith(ADOPTED_PREFIX):
            self.replayed += len(lines.rows)
        else:
            self.flushed += len(lines.rows)

    def _insert_one_by_one(self, engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
        assert self._directory is not None
        for row in rows:
            try:
                insert_calls(engine, [row], 1)
            except exc.SQLAlchemyError as error:
                if _unreachable(error):
                    raise
                reason = redact_urls(str(error).splitlines()[0] if str(error) else repr(error))
                LOGGER.error(
                    "call trail: the audit database refused call %s (%s); kept in %s",
                    row.get("request_id"),
                    reason,
                    self.journal_dir / REJECTED_FILE,
                )
                kept = {**row, "called_at": str(row.get("called_at")), "rejected": reason}
                with open(self.journal_dir / REJECTED_FILE, "a", encoding="utf-8") as rejected:
                    rejected.write(json.dumps(kept, default=str) + "\n")

    def _failed(self, error: Exception) -> None:
        self._failures += 1
        delay = min(self.flush_interval * 2**self._failures, MAX_RETRY_SECONDS)
        self._retry_at = time.monotonic() + delay
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        self.last_error = redact_urls(message)
        LOGGER.warning(
            "call trail: cannot write %d journaled call(s) to the audit database %s (%s); "
            "calls are still answered and journaled; retrying in %.1f s (attempt %d)",
            self.backlog,
            redact_url(self.audit_url),
            self.last_error,
            delay,
            self._failures,
        )


def iter_journal(journal_dir: Path) -> Iterator[dict[str, Any]]:
    """Every call still journaled under ``journal_dir`` (not yet in the database), as rows.

    Args:
        journal_dir: A trail's ``journal_dir``.

    Yields:
        ``prediction_calls`` rows, writer by writer, oldest segment first.
    """
    for directory in sorted(Path(journal_dir).glob(f"{WRITER_PREFIX}*")):
        for segment in _segments(directory):
            yield from read_segment(segment).rows
