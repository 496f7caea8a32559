"""Leases on a real SQLite file: one holder at a time across processes, dead holders taken over."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ml_platform.core.leases import Lease, LeaseHeld, Leases, training_lease

NAME = training_lease("loans")
TAKERS = 4
KILLED = "killed-run"


def _alive(holder: str) -> bool:
    del holder
    return True


def _dead(holder: str) -> bool:
    del holder
    return False


def _slowly_dead(holder: str) -> bool:
    """The killed run is dead; asking takes a while (a remote instance), widening any race."""
    time.sleep(0.3)
    return holder != KILLED


def _take(
    url: str,
    holder: str,
    start: multiprocessing.synchronize.Barrier,
    outcomes: multiprocessing.queues.Queue,
) -> None:
    """One racing process: wait for the others, then try to take the lease."""
    leases = Leases(url)
    start.wait()
    try:
        leases.acquire(NAME, holder, _slowly_dead)
    except LeaseHeld as error:
        outcomes.put((holder, f"refused:{error.lease.holder}"))
    else:
        outcomes.put((holder, "taken"))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


def test_processes_racing_for_a_dead_holders_lease_get_exactly_one_holder(url: str) -> None:
    Leases(url).acquire(NAME, KILLED, _alive)  # never released: its process was killed
    context = multiprocessing.get_context("spawn")
    start, queue = context.Barrier(TAKERS), context.Queue()
    takers = [
        context.Process(target=_take, args=(url, f"run-{index}", start, queue))
        for index in range(TAKERS)
    ]
    for taker in takers:
        taker.start()
    outcomes = dict(queue.get(timeout=120) for _ in takers)
    for taker in takers:
        taker.join()

    winners = [holder for holder, outcome in outcomes.items() if outcome == "taken"]
    assert len(winners) == 1, outcomes
    # Every other taker waited for the winner's commit and saw its lease, alive.
    assert sorted(outcomes.values()) == sorted(["taken"] + [f"refused:{winners[0]}"] * (TAKERS - 1))
    current = Leases(url).current(NAME)
    assert current is not None and current.holder == winners[0]


def test_a_live_holder_keeps_the_lease_and_the_error_names_it(url: str) -> None:
    leases = Leases(url)
    taken = leases.acquire(NAME, "run-a", _alive)

    with pytest.raises(LeaseHeld) as raised:
        leases.acquire(NAME, "run-b", _alive)

    assert raised.value.lease == taken
    assert "run-a" in str(raised.value) and taken.acquired_at.isoformat(timespec="seconds") in str(
        raised.value
    )
    assert taken.acquired_at <= datetime.now(UTC)


def test_a_dead_holder_is_taken_over(url: str) -> None:
    leases = Leases(url)
    leases.acquire(NAME, "killed-run", _alive)  # never released: its process was killed
    asked: list[str] = []

    def is_alive(holder: str) -> bool:
        asked.append(holder)
        return False

    lease = leases.acquire(NAME, "run-b", is_alive)

    assert asked == ["killed-run"]
    assert lease.holder == "run-b"
    assert leases.current(NAME) == lease


def test_the_same_run_takes_its_lease_again_without_asking(url: str) -> None:
    leases = Leases(url)
    first = leases.acquire(NAME, "run-a", _alive)

    def never_asked(holder: str) -> bool:
        raise AssertionError(f"asked about {holder}")

    again = leases.acquire(NAME, "run-a", never_asked)

    assert again == first


def test_held_releases_on_error_and_only_the_holder_releases(url: str) -> None:
    leases = Leases(url)
    with pytest.raises(RuntimeError, match="training failed"), leases.held(NAME, "run-a", _alive):
        assert not leases.release(NAME, "run-b")
        assert leases.current(NAME) is not None
        raise RuntimeError("training failed")

    assert leases.current(NAME) is None
    assert leases.acquire(NAME, "run-b", _dead) == Lease(
        NAME,
        "run-b",
        leases.current(NAME).acquired_at,  # type: ignore[union-attr]
    )


def test_leases_of_different_models_are_independent(url: str) -> None:
    leases = Leases(url)
    leases.acquire(training_lease("loans"), "run-a", _alive)

    other = leases.acquire(training_lease("fraud"), "run-b", _alive)

    assert other.holder == "run-b"
