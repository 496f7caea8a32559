"""The per-call audit trail on a real SQLite file and a real PostgreSQL server.

The journal is real files and the database is real: a call acknowledged by ``record`` reaches
``prediction_calls`` exactly once, whether the trail closes, is abandoned (its process died) and
replayed by the next trail, meets a torn last line, or writes while the database is down.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ml_platform.serving.calls import (
    PREDICTION_CALLS,
    CallRecord,
    calls_engine,
    calls_frame,
    entity_key,
    features_hash,
    query_calls,
)
from ml_platform.serving.journal import CallTrail, iter_journal, journal_line
from tests.postgres import PostgresServer

MODEL = "loan_default"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def a_call(
    number: int,
    *,
    caller: str = "checkout",
    version: str | None = "3",
    role: str | None = "champion",
    status: int = 200,
    prediction: float | list[float] | None = 0.25,
    features: dict | None = None,
) -> CallRecord:
    values = features if features is not None else {"credit_score": 600.0 + number, "amount": 9.5}
    return CallRecord(
        request_id=f"req-{number:06d}-{uuid.uuid4().hex[:8]}",
        called_at=T0 + timedelta(seconds=number),
        model=MODEL,
        model_version=version,
        role=role,
        caller=caller,
        entity_key=entity_key({"applicant_id": number % 10}),
        status_code=status,
        latency_ms=2.5,
        identifiers={"loan_id": 1000 + number},
        request_features={"amount": 9.5},
        features=values,
        features_hash=features_hash(values),
        feature_views={"bureau": "f00d"},
        error=None if status == 200 else "entity not in the online store",
        prediction=prediction if status == 200 else None,
    )


@dataclass
class Database:
    """An audit database URL, and how to make it unreachable and reachable again."""

    url: str
    take_down: Callable[[], None]
    bring_up: Callable[[], None]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "audit.db"

        def take_down() -> None:
            # A directory where the database file should be: SQLite cannot open it.
            path.unlink(missing_ok=True)
            path.mkdir()

        yield Database(f"sqlite:///{path}", take_down, lambda: path.rmdir())
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"calls_{uuid.uuid4().hex[:10]}"

    def drop() -> None:
        server.drop_database(name)

    def create() -> None:
        server.create_database(name)

    create()
    try:
        # Down: the database does not exist (the server refuses the connection).
        yield Database(server.url(name), drop, create)
    finally:
        drop()


def stored_ids(url: str) -> list[str]:
    with calls_engine(url).connect() as connection:
        return list(connection.execute(sa.select(PREDICTION_CALLS.c.request_id)).scalars())


def test_a_closed_trail_has_written_every_call_once(database: Database, tmp_path: Path) -> None:
    calls = [a_call(i) for i in range(1200)]
    with CallTrail(database.url, tmp_path / "journal", batch_size=100) as trail:
        for call in calls:
            trail.record(call)
    ids = stored_ids(database.url)
    assert sorted(ids) == sorted(c.request_id for c in calls)
    # Nothing is left in the journal once the rows are committed.
    assert list(iter_journal(tmp_path / "journal")) == []
    assert list((tmp_path / "journal").iterdir()) == []

    stored = query_calls(database.url, MODEL, request_id=calls[7].request_id)
    assert stored == [calls[7]]


def test_calls_are_in_the_database_while_the_trail_runs(database: Database, tmp_path: Path) -> None:
    trail = CallTrail(database.url, tmp_path / "journal", flush_interval=0.05).open()
    try:
        calls = [a_call(i) for i in range(50)]
        for call in calls:
            trail.record(call)
        trail.flush()
        assert len(stored_ids(database.url)) == 50
        assert trail.backlog == 0
    finally:
        trail.close()


def abandon(trail: CallTrail) -> None:
    """What a killed process leaves: the journal on disk, its lock released, nothing flushed."""
    trail._stopping.set()
    trail._wake.set()
    assert trail._thread is not None
    trail._thread.join()
    assert trail._descriptor is not None and trail._dir_lock is not None
    os.close(trail._descriptor)
    os.close(trail._dir_lock)


def test_replay_of_an_abandoned_journal_is_idempotent(database: Database, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    first = CallTrail(database.url, journal, flush_interval=3600).open()
    calls = [a_call(i) for i in range(30)]
    for call in calls[:10]:
        first.record(call)
    first.flush()  # these ten are in the database already; the journal is replayed anyway
    for call in calls[10:]:
        first.record(call)
    # Re-journal the first ten too, as if their segment's deletion had not happened.
    assert first._directory is not None
    (first._directory / "000000000000-again.jsonl").write_bytes(
        b"".join(journal_line(c) for c in calls[:10])
    )
    abandon(first)
    assert len(stored_ids(database.url)) == 10

    with CallTrail(database.url, journal):
        pass
    assert sorted(stored_ids(database.url)) == sorted(c.request_id for c in calls)
    assert list(journal.iterdir()) == []


def test_a_torn_last_line_is_skipped_with_a_warning(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "journal"
    first = CallTrail(database.url, journal, flush_interval=3600).open()
    calls = [a_call(i) for i in range(5)]
    for call in calls:
        first.record(call)
    torn = journal_line(a_call(99))
    assert first._descriptor is not None
    os.write(first._descriptor, torn[: len(torn) // 2])  # killed inside os.write
    abandon(first)

    with caplog.at_level(logging.WARNING), CallTrail(database.url, journal):
        pass
    assert sorted(stored_ids(database.url)) == sorted(c.request_id for c in calls)
    assert "torn line" in caplog.text


def test_a_database_down_does_not_fail_calls_and_they_arrive_when_it_is_up(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database.take_down()
    journal = tmp_path / "journal"
    calls = [a_call(i) for i in range(40)]
    with caplog.at_level(logging.WARNING):
        trail = CallTrail(database.url, journal, flush_interval=0.02).open()
        for call in calls[:20]:
            trail.record(call)
        with pytest.raises(SQLAlchemyError):
            trail.flush()
        for call in calls[20:]:
            trail.record(call)  # still acknowledged: journaled
        assert trail.last_error is not None
        assert trail.backlog == 40
        assert "cannot write" in caplog.text and "retrying in" in caplog.text
        # The database stays down through close: the calls stay journaled...
        trail.close(timeout=0.1)
    assert len(list(iter_journal(journal))) == 40

    # ...and the next trail on the journal writes them once the database is up.
    database.bring_up()
    with CallTrail(database.url, journal, flush_interval=0.02) as trail:
        trail.record(extra := a_call(500))
    assert sorted(stored_ids(database.url)) == sorted(c.request_id for c in [*calls, extra])


def test_the_flusher_retries_until_the_database_is_back(database: Database, tmp_path: Path) -> None:
    database.take_down()
    trail = CallTrail(database.url, tmp_path / "journal", flush_interval=0.02).open()
    try:
        calls = [a_call(i) for i in range(10)]
        for call in calls:
            trail.record(call)
        database.bring_up()
        trail._retry_at = 0.0  # skip the back-off already scheduled; the flusher retries
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while trail.backlog and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        assert trail.backlog == 0 and trail.last_error is None
        assert sorted(stored_ids(database.url)) == sorted(c.request_id for c in calls)
    finally:
        trail.close()


@pytest.mark.parametrize("fsync", ["interval", "always"])
def test_threads_record_concurrently_without_losing_or_tearing_a_call(
    database: Database, tmp_path: Path, fsync: Literal["interval", "always"]
) -> None:
    threads, per_thread = 8, 150
    calls = [[a_call(t * 1000 + i) for i in range(per_thread)] for t in range(threads)]
    journal = tmp_path / "journal"
    with CallTrail(database.url, journal, flush_interval=0.01, batch_size=37, fsync=fsync) as trail:
        start = threading.Barrier(threads)

        def write(mine: list[CallRecord]) -> None:
            start.wait()
            for call in mine:
                trail.record(call)

        workers = [threading.Thread(target=write, args=(mine,)) for mine in calls]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    ids = stored_ids(database.url)
    assert len(ids) == len(set(ids)) == threads * per_thread
    assert set(ids) == {c.request_id for mine in calls for c in mine}


def test_query_filters(database: Database, tmp_path: Path) -> None:
    calls = [
        a_call(1, caller="checkout", version="3"),
        a_call(2, caller="checkout", version="4", role="canary"),
        a_call(3, caller="unauthenticated", version=None, role=None, status=401),
        a_call(11, caller="backoffice", version="3"),  # entity applicant_id 1, like call 1
        a_call(10, caller="backoffice", version="3"),  # entity applicant_id 0
    ]
    with CallTrail(database.url, tmp_path / "journal") as trail:
        for call in calls:
            trail.record(call)

    def ids(**filters: object) -> list[str]:
        return [c.request_id for c in query_calls(database.url, MODEL, **filters)]  # type: ignore[arg-type]

    everything = ids()
    assert everything == [calls[i].request_id for i in (0, 1, 2, 4, 3)]  # by call time
    assert ids(caller="backoffice") == [calls[4].request_id, calls[3].request_id]
    assert ids(version="4") == [calls[1].request_id]
    assert ids(start=T0 + timedelta(seconds=2), end=T0 + timedelta(seconds=10)) == [
        calls[1].request_id,
        calls[2].request_id,
    ]
    assert ids(entity={"applicant_id": 1}) == [calls[0].request_id, calls[3].request_id]
    assert ids(entity={"applicant_id": "1"}) == ids(entity={"applicant_id": 1})
    assert ids(entity={"applicant_id": 0}) == [calls[4].request_id]  # not 10, not 0.5
    assert ids(entity={"applicant_id": 5}) == []
    assert ids(limit=2) == [calls[4].request_id, calls[3].request_id]  # the newest two
    assert query_calls(database.url, "another_model") == []
    refused = query_calls(database.url, MODEL, caller="unauthenticated")[0]
    assert refused.status_code == 401 and refused.prediction is None and not refused.succeeded


def test_the_entity_key_is_canonical_and_the_hash_follows_the_values() -> None:
    assert entity_key({"b": 2, "a": "x"}) == entity_key({"a": "x", "b": 2}) == '{"a":"x","b":2}'
    assert features_hash({"x": 1.0, "y": 2}) == features_hash({"y": 2, "x": 1.0})
    assert features_hash({"x": 1.0}) != features_hash({"x": 1.5})
    import numpy as np

    assert entity_key({"id": np.int64(7)}) == '{"id":7}'


def test_the_calls_frame_has_the_shape_of_predictions(database: Database, tmp_path: Path) -> None:
    calls = [
        a_call(1),
        a_call(2, version="4", role="canary", prediction=0.75),
        a_call(3, status=404),  # failed: not judged
        a_call(4, features={"credit_score": float("nan"), "amount": 3.0}),
    ]
    multiclass = [a_call(5, prediction=[0.2, 0.3, 0.5])]
    with CallTrail(database.url, tmp_path / "journal") as trail:
        for call in [*calls, *multiclass]:
            trail.record(call)
    frame = calls_frame(database.url, MODEL, T0, T0 + timedelta(seconds=5), timestamp_column="ts")
    assert list(frame["request_id"]) == [
        calls[0].request_id,
        calls[1].request_id,
        calls[3].request_id,
    ]
    assert list(frame["score"]) == [0.25, 0.75, 0.25]
    assert list(frame["model_version"]) == ["3", "4", "3"]
    assert list(frame["applicant_id"]) == [1, 2, 4] and list(frame["loan_id"]) == [1001, 1002, 1004]
    assert frame["credit_score"].isna().tolist() == [False, False, True]  # NaN stored as null
    assert (frame["ts"] == frame["scored_at"]).all() and str(frame["ts"].dt.tz) == "UTC"
    scored = calls_frame(database.url, MODEL, T0 + timedelta(seconds=5), None)
    assert [scored.loc[0, f"score_{i}"] for i in range(3)] == [0.2, 0.3, 0.5]
    assert calls_frame(database.url, MODEL, T0 + timedelta(days=1), None).empty


def test_secrets_never_enter_a_record(tmp_path: Path) -> None:
    """The trail stores what it is given: the caller is a key's name (the service's job)."""
    line = json.loads(journal_line(a_call(1, caller="checkout")))
    assert set(line) == set(CallRecord.__dataclass_fields__)
    assert line["caller"] == "checkout"


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from ml_platform.serving.journal import CallTrail
from tests.unit.test_call_trail import a_call
trail = CallTrail(sys.argv[1], Path(sys.argv[2]), flush_interval=0.05).open()
for i in range(100000):
    call = a_call(i)
    trail.record(call)
    print(call.request_id, flush=True)  # acknowledged
"""


def test_a_killed_process_loses_no_acknowledged_call(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    journal = tmp_path / "journal"
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, url, str(journal)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    acknowledged = []
    assert process.stdout is not None
    for line in process.stdout:
        acknowledged.append(line.strip())
        if len(acknowledged) == 3000:
            process.kill()  # SIGKILL: no close, no flush
            break
    acknowledged += [line.strip() for line in process.stdout if line.endswith("\n")]
    process.wait(timeout=30)
    assert process.returncode == -9
    with CallTrail(url, journal):
        pass
    stored = stored_ids(url)
    assert len(stored) == len(set(stored))
    assert set(acknowledged) <= set(stored)
    assert list(iter_journal(journal)) == []


def test_the_calls_command_answers_who_called_what_when(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml_platform.cli.main import main

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("ML_PLATFORM_AUDIT_URL", url)
    now = datetime.now(UTC)
    calls = [
        replace(a_call(1, caller="checkout"), called_at=now - timedelta(hours=3)),
        replace(a_call(2, caller="backoffice", version="4", role="canary"), called_at=now),
        replace(a_call(13, caller="unauthenticated", status=401, version=None), called_at=now),
    ]
    with CallTrail(url, tmp_path / "journal") as trail:
        for call in calls:
            trail.record(call)

    assert main(["calls", MODEL, "--since", "1h"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["time", "(UTC)", "caller"]
    assert len(table) == 3  # the header and the two calls of the last hour
    assert "backoffice" in table[1] and "v4 canary" in table[1] and "applicant_id=2" in table[1]
    assert calls[1].features_hash[:12] in table[1] and "bureau@f00d" in table[1]  # type: ignore[index]
    assert "200 0.25" in table[1] and calls[1].request_id in table[1]
    assert "unauthenticated" in table[2] and "401 entity not in the online store" in table[2]

    assert main(["calls", MODEL, "--entity", "applicant_id=2", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert shown["request_id"] == calls[1].request_id
    assert shown["features"] == calls[1].features and shown["caller"] == "backoffice"

    start = (now - timedelta(hours=4)).isoformat()
    assert main(["calls", MODEL, "--since", start, "--until", "2h", "--caller", "checkout"]) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert calls[0].request_id in row
    assert main(["calls", MODEL, "--request-id", calls[2].request_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status_code"] == 401
    assert main(["calls", MODEL, "--version", "9"]) == 0
    assert "no calls of 'loan_default' match" in capsys.readouterr().err

    assert main(["calls", MODEL, "--since", "yesterday"]) == 2
    assert "write e.g. 1h" in capsys.readouterr().err
    assert main(["calls", MODEL, "--entity", "applicant_id"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_a_calls_window_reads_the_trail(tmp_path: Path) -> None:
    """``monitoring.source: calls``: the drift report's rows come from the trail, not a file."""
    from ml_platform.core.audit import AuditLog
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.lifecycle.records import StepContext
    from ml_platform.lifecycle.scored_window import ScoredWindow, read_window
    from ml_platform.registry.client import ModelRegistry
    from ml_platform.spec.catalog import ResolvedFeatures
    from ml_platform.spec.model import ModelSpec
    from tests.e2e import loans

    settings = PlatformSettings.from_env(home=tmp_path / "home")
    monitoring = {"source": "calls", "window": "1h"}
    spec = ModelSpec.model_validate(loans.model_spec(monitoring=monitoring))
    resolved = ResolvedFeatures(
        feature_views={"bureau": ["credit_score", "debt_ratio"]},
        request=["amount"],
        categorical=[],
        entity_columns=["applicant_id"],
        timestamp_column="applied_at",
    )
    step = StepContext(settings, ModelRegistry.for_settings(settings), AuditLog(settings.audit_url))
    now = datetime.now(UTC)
    old, recent = (
        replace(a_call(1), called_at=now - timedelta(hours=3)),
        replace(a_call(2), called_at=now - timedelta(minutes=5)),
    )
    with CallTrail(settings.audit_url, tmp_path / "journal") as trail:
        trail.record(old)
        trail.record(recent)

    frame, source = read_window(spec, resolved, step, ScoredWindow())  # the last hour
    assert list(frame["request_id"]) == [recent.request_id]
    assert {"applied_at", "score", "model_version", "scored_at", "applicant_id"} <= set(frame)
    assert source.startswith("calls of loan_default from ")
    ranged, _ = read_window(spec, resolved, step, ScoredWindow(start=now - timedelta(hours=4)))
    assert list(ranged["request_id"]) == [old.request_id, recent.request_id]
    with pytest.raises(ValueError, match="monitors its online calls"):
        read_window(spec, resolved, step, ScoredWindow(predictions_path=str(tmp_path / "p")))
