"""Killing the prediction service mid-load loses no acknowledged call from the audit trail.

The fraud example is trained once (its champion) in its own home, and the real ``ml-platform
serve`` runs as a subprocess on a free localhost port. Threads send bounded concurrent load
(single and batch predictions); every request id answered with a 200 is acknowledged. The service
is SIGKILLed while the load runs (no shutdown, no flush), then started again on the same home: its
call trail replays the journal the killed process left. Every acknowledged request id is then in
``prediction_calls`` exactly once, with its caller, version and prediction.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from ml_platform.core.settings import PlatformSettings
from ml_platform.serving.calls import PREDICTION_CALLS, calls_engine, query_calls
from ml_platform.serving.journal import iter_journal
from tests.e2e.serving_world import (
    MODEL,
    distinct_entities,
    new_keys,
    start_service,
    train,
    wait_ready,
    world_environment,
)

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}/predict"
BATCH = f"/v1/models/{MODEL}/predict/batch"
THREADS = 4
CALLS_PER_THREAD = 400  # bounded: the load never exceeds 1,600 requests...
LOAD_SECONDS = 60.0  # ...nor this long
KILL_AFTER = 150  # acknowledged calls before the SIGKILL


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A home with the example's champion, and calls for distinct entities of its payments."""
    root = tmp_path_factory.mktemp("serving_kill")
    with world_environment(root) as home:
        with dg.DagsterInstance.ephemeral() as instance:
            train(instance)
        settings = PlatformSettings.from_env()
        payments = pd.read_parquet(settings.data_path("payments", "transactions.parquet"))
        payments = payments.sort_values("event_timestamp").reset_index(drop=True)
        yield home, distinct_entities(payments, 100)


def test_a_killed_service_loses_no_acknowledged_call(
    home: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, instances = home
    settings = PlatformSettings.from_env()
    keys = new_keys()
    service = start_service(directory, keys)
    acknowledged: dict[str, str] = {}  # request id -> caller
    lock = threading.Lock()
    enough = threading.Event()
    try:
        wait_ready(service)

        def load(worker: int) -> None:
            caller = "checkout" if worker % 2 == 0 else "backoffice"
            headers = {"Authorization": f"Bearer {keys[caller]}"}
            deadline = time.monotonic() + LOAD_SECONDS
            with httpx.Client(base_url=service.url, headers=headers, timeout=30.0) as client:
                for i in range(CALLS_PER_THREAD):
                    if time.monotonic() > deadline:
                        return
                    chosen = instances[(worker * CALLS_PER_THREAD + i) % len(instances)]
                    try:
                        if i % 10 == 9:
                            response = client.post(BATCH, json={"instances": [chosen, chosen]})
                            ids = [p["request_id"] for p in response.json()["predictions"]]
                        else:
                            response = client.post(PREDICT, json=chosen)
                            ids = [response.json()["request_id"]]
                    except (httpx.TransportError, ValueError, KeyError):
                        return  # the service is gone: nothing more is acknowledged
                    if response.status_code == 200:
                        with lock:
                            acknowledged.update(dict.fromkeys(ids, caller))
                            if len(acknowledged) >= KILL_AFTER:
                                enough.set()

        workers = [threading.Thread(target=load, args=(w,)) for w in range(THREADS)]
        for worker in workers:
            worker.start()
        assert enough.wait(LOAD_SECONDS), f"only {len(acknowledged)} calls acknowledged"
        os.kill(service.process.pid, signal.SIGKILL)  # mid-load: no shutdown, no flush
        for worker in workers:
            worker.join(LOAD_SECONDS + 30)
        assert service.process.wait(30) == -signal.SIGKILL
    finally:
        service.stop()

    journal = directory / "serving" / "journal" / MODEL
    left = sum(1 for _ in iter_journal(journal))
    with calls_engine(settings.audit_url).connect() as connection:
        before = connection.execute(
            sa.select(sa.func.count()).select_from(PREDICTION_CALLS)
        ).scalar_one()
    print(f"acknowledged {len(acknowledged)}; in the database {before}, journaled {left}")

    # The next start replays what the killed process journaled (and stops gracefully, flushing).
    restarted = start_service(directory, keys)
    try:
        wait_ready(restarted)
    finally:
        restarted.stop()
    assert "replaying" in restarted.log.read_text() or left == 0
    assert list(iter_journal(journal)) == []

    stored = query_calls(settings.audit_url, MODEL, limit=None)
    by_id: dict[str, int] = {}
    for call in stored:
        by_id[call.request_id] = by_id.get(call.request_id, 0) + 1
    missing = [i for i in acknowledged if i not in by_id]
    assert not missing, f"{len(missing)} acknowledged calls lost, e.g. {missing[:3]}"
    assert all(by_id[i] == 1 for i in acknowledged)
    answered = {c.request_id: c for c in stored if c.request_id in acknowledged}
    assert all(c.status_code == 200 and c.prediction is not None for c in answered.values())
    assert all(answered[i].caller == caller for i, caller in acknowledged.items())
    assert all(c.model_version is not None and c.features_hash for c in answered.values())
