"""Canary deployment: the registry's serving state and the canary decision on measured figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.lifecycle.canary import (
    call_counts,
    decide_canary,
    measure_canary,
    prediction_shift,
)
from ml_platform.lifecycle.deploy import (
    CanaryError,
    CanaryRun,
    rollback_canary,
    running_canary,
    start_canary,
)
from ml_platform.lifecycle.live_figures import CANARY, CHAMPION, CanaryFigures, RoleFigures
from ml_platform.lifecycle.records import TAG_EVALUATION, StepContext
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.serving import ServingState
from ml_platform.registry.tags import CANARY_ALIAS, TAG_CANARY_SHARE, TAG_CANARY_SINCE
from ml_platform.serving.calls import CallRecord, entity_key
from ml_platform.serving.journal import CallTrail
from ml_platform.spec.model import ModelSpec
from tests.unit.spec_examples import MINIMAL_MODEL

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A registry on a fresh SQLite backend with model ``toy`` in three versions."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    registry = ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
    )
    registry.client.create_registered_model("toy")
    for _ in range(3):
        registry.client.create_model_version("toy", source=str(tmp_path / "artifacts"))
    return registry


def test_serving_state_reads_champion_canary_share_and_start(registry: ModelRegistry) -> None:
    assert registry.serving_state("absent") == ServingState(champion=None, canary=None)
    registry.set_champion("toy", "1")
    assert registry.serving_state("toy") == ServingState(champion="1", canary=None)

    registry.set_canary("toy", "2", 0.2, START)
    assert registry.serving_state("toy") == ServingState("1", "2", 0.2, START)

    registry.clear_canary("toy")
    registry.clear_canary("toy")  # clearing twice is fine
    assert registry.serving_state("toy") == ServingState(champion="1", canary=None)
    tags = registry.client.get_registered_model("toy").tags
    assert TAG_CANARY_SHARE not in tags and TAG_CANARY_SINCE not in tags


def test_a_canary_alias_without_a_readable_share_is_no_canary(registry: ModelRegistry) -> None:
    registry.client.set_registered_model_alias("toy", CANARY_ALIAS, "3")
    assert registry.serving_state("toy").canary is None
    registry.client.set_registered_model_tag("toy", TAG_CANARY_SHARE, "lots")
    assert registry.serving_state("toy").canary is None
    registry.client.set_registered_model_tag("toy", TAG_CANARY_SHARE, "0.5")
    assert registry.serving_state("toy") == ServingState(None, "3", 0.5, None)


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_set_canary_refuses_a_share_outside_zero_one(registry: ModelRegistry, share: float) -> None:
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        registry.set_canary("toy", "2", share, START)
    assert registry.serving_state("toy").canary is None


def policy_spec(**canary: Any) -> ModelSpec:
    """The minimal spec with ``serving.canary`` set to the defaults updated with ``canary``."""
    bounds = {"min_calls": 100, "min_duration": "15m", "max_duration": "1d", **canary}
    return ModelSpec.model_validate({**MINIMAL_MODEL, "serving": {"canary": bounds}})


def figures(
    minutes: float = 30,
    *,
    calls: int = 400,
    errors: int = 0,
    champion_calls: int = 1600,
    p99: float = 12.0,
    champion_p99: float = 10.0,
    shift: float | None = 0.02,
    labelled: int = 0,
    auc: float | None = None,
    champion_auc: float | None = None,
) -> CanaryFigures:
    """Figures of canary v3 against champion v2, measured ``minutes`` after it started."""
    return CanaryFigures(
        model="churn",
        canary=RoleFigures(
            CANARY, "3", calls, errors, 5.0, p99, labelled, auc if labelled else None
        ),
        champion=RoleFigures(
            CHAMPION,
            "2",
            champion_calls,
            0,
            5.0,
            champion_p99,
            labelled * 4,
            champion_auc if labelled else None,
        ),
        share=0.2,
        since=START.isoformat(),
        measured_at=(START + timedelta(minutes=minutes)).isoformat(),
        metric="roc_auc",
        prediction_shift=shift,
    )


def test_a_canary_within_every_bound_is_promoted_once_min_calls_and_min_duration_passed() -> None:
    decision = decide_canary(policy_spec(), figures())
    assert decision.action == "promote"
    assert decision.reasons[:2] == [
        "400 canary calls >= min_calls 100",
        "running 30m00s >= min_duration 15m",
    ]
    assert "error rate 0.00% <= bound 1.00% (0 of 400 canary calls answered 5xx)" in (
        decision.reasons
    )
    assert "p99 latency ratio 1.20 <= bound 1.50 (canary 12.0 ms, champion 10.0 ms)" in (
        decision.reasons
    )
    assert (
        "prediction shift (Jensen-Shannon distance of the scores) 0.020 <= bound 0.100"
        in decision.reasons
    )
    # Labels have not arrived: performance does not hold the promotion, and it says so.
    assert (
        "roc_auc not judged yet: 0 canary and 0 champion calls labelled, 100 of each needed"
        in decision.reasons
    )


@pytest.mark.parametrize(
    ("changes", "broken"),
    [
        ({"errors": 8}, "error rate 2.00% > bound 1.00% (8 of 400 canary calls answered 5xx)"),
        (
            {"p99": 16.0},
            "p99 latency ratio 1.60 > bound 1.50 (canary 16.0 ms, champion 10.0 ms)",
        ),
        (
            {"shift": 0.25},
            "prediction shift (Jensen-Shannon distance of the scores) 0.250 > bound 0.100",
        ),
        (
            {"labelled": 150, "auc": 0.80, "champion_auc": 0.85},
            "roc_auc drop +0.0500 > bound 0.0200 (canary 0.8000 on 150 labelled calls, "
            "champion 0.8500 on 600)",
        ),
    ],
)
def test_a_broken_bound_rolls_the_canary_back_with_measured_and_bound(
    changes: dict[str, Any], broken: str
) -> None:
    # Before min_duration too: a broken bound on min_calls calls is enough.
    decision = decide_canary(policy_spec(), figures(minutes=5, **changes))
    assert decision.action == "rollback"
    assert decision.reasons[0] == broken


def test_a_small_performance_drop_within_the_bound_promotes() -> None:
    decision = decide_canary(policy_spec(), figures(labelled=150, auc=0.84, champion_auc=0.85))
    assert decision.action == "promote"
    assert (
        "roc_auc drop +0.0100 <= bound 0.0200 (canary 0.8400 on 150 labelled calls, "
        "champion 0.8500 on 600)" in decision.reasons
    )


@pytest.mark.parametrize(
    ("minutes", "changes", "why"),
    [
        (30, {"calls": 40, "errors": 20}, "40 canary calls < min_calls 100"),
        (5, {}, "running 5m00s < min_duration 15m"),
        (30, {"champion_calls": 50}, "latency not compared: 50 champion calls, 100 needed"),
    ],
)
def test_the_canary_waits_for_calls_time_and_a_comparable_champion(
    minutes: float, changes: dict[str, Any], why: str
) -> None:
    # Errors on fewer than min_calls calls do not roll back yet.
    decision = decide_canary(policy_spec(), figures(minutes, **changes))
    assert decision.action == "wait"
    assert why in decision.reasons


def test_a_canary_undecided_after_max_duration_is_rolled_back() -> None:
    decision = decide_canary(policy_spec(), figures(60 * 25, calls=40))
    assert decision.action == "rollback"
    assert decision.reasons[:2] == [
        "undecided after 25h00m >= max_duration 1d",
        "40 canary calls < min_calls 100",
    ]


def test_decide_judges_at_the_given_time() -> None:
    measured = figures(minutes=5)
    assert decide_canary(policy_spec(), measured).action == "wait"
    later = START + timedelta(minutes=20)
    assert decide_canary(policy_spec(), measured, later).action == "promote"


def test_prediction_shift_is_zero_for_one_distribution_and_large_for_another() -> None:
    rng = np.random.default_rng(0)
    same = rng.uniform(size=4000)
    assert prediction_shift(same[:2000], same[2000:], categorical=False) == pytest.approx(
        0.0, abs=0.05
    )
    shifted = prediction_shift(rng.beta(2, 5, 2000), rng.beta(5, 2, 2000), categorical=False)
    assert shifted is not None and shifted > 0.3
    classes = prediction_shift(np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.0, 0.0]), True)
    assert classes is not None and classes > 0.3
    assert prediction_shift(np.array([]), same, categorical=False) is None


def test_figures_round_trip_through_json() -> None:
    measured = figures(labelled=150, auc=0.84, champion_auc=0.85)
    assert CanaryFigures.from_dict(json.loads(json.dumps(measured.to_dict()))) == measured
    assert measured.table()[0] == {
        "role": "canary",
        "version": "3",
        "calls": 400,
        "error_rate": 0.0,
        "p50_latency_ms": 5.0,
        "p99_latency_ms": 12.0,
        "labelled_calls": 150,
        "roc_auc": 0.84,
    }


def test_start_and_roll_back_a_canary_of_a_gated_version_audited(
    registry: ModelRegistry, platform_home: Path
) -> None:
    audit = AuditLog(f"sqlite:///{platform_home / 'audit.db'}")
    step = StepContext(PlatformSettings.from_env(), registry, audit)
    spec = policy_spec().model_copy(update={"name": "toy"})
    with pytest.raises(CanaryError, match="no champion to compare a canary with"):
        start_canary(spec, step)
    registry.set_champion("toy", "1")
    with pytest.raises(CanaryError, match=r"no version whose evaluation gates passed besides"):
        start_canary(spec, step)
    for version, verdict in (("1", "passed"), ("2", "passed"), ("3", "failed")):
        registry.tag_version("toy", version, {TAG_EVALUATION: verdict})
    with pytest.raises(CanaryError, match="v3 of 'toy' did not pass its evaluation gates"):
        start_canary(spec, step, version="3")
    with pytest.raises(CanaryError, match="v1 is already the champion"):
        start_canary(spec, step, version="1")
    with pytest.raises(CanaryError, match="must be between 0 and 1"):
        start_canary(spec, step, share=1.0)
    assert audit.events("toy", "canary_started") == []

    state = start_canary(spec, step, now=START)
    assert (state.champion, state.canary, state.canary_share) == ("1", "2", 0.2)
    assert state.canary_since == START.isoformat()
    run = running_canary(audit, "toy")
    assert run is not None and (run.version, run.champion, run.share) == ("2", "1", 0.2)
    with pytest.raises(CanaryError, match="a canary of 'toy' already runs: v2 at 20%"):
        start_canary(spec, step)

    after = rollback_canary(spec, step, ["error rate 5.00% > bound 1.00%"])
    assert (after.champion, after.canary, after.canary_share) == ("1", None, 0.0)
    assert running_canary(audit, "toy") is None
    event = audit.events("toy", "canary_rolled_back")[-1]
    assert event.model_version == "2"
    assert event.details["reasons"] == ["error rate 5.00% > bound 1.00%"]
    assert event.details["since"] == START.isoformat()


def test_measure_counts_each_role_of_the_canary_since_its_start(platform_home: Path) -> None:
    audit = AuditLog(f"sqlite:///{platform_home / 'audit.db'}")
    settings = PlatformSettings.from_env()
    step = StepContext(settings, ModelRegistry("sqlite:///unused.db", str(platform_home)), audit)
    run = CanaryRun(version="3", champion="2", share=0.2, since=START.isoformat())

    def call(minute: int, version: str, role: str, status: int, latency: float) -> CallRecord:
        return CallRecord(
            request_id=f"{version}-{role}-{minute}-{status}-{latency}",
            called_at=START + timedelta(minutes=minute),
            model="churn",
            model_version=version,
            role=role,
            caller="checkout",
            entity_key=entity_key({"customer_id": minute}),
            status_code=status,
            latency_ms=latency,
            prediction=None if status >= 500 else minute / 100,
        )

    calls = [call(m, "3", CANARY, 500 if m < 2 else 200, 10.0) for m in range(10)]
    calls += [call(m, "2", CHAMPION, 200, 5.0) for m in range(30)]
    calls += [call(-5, "3", CANARY, 500, 10.0)]  # before the canary started
    calls += [call(4, "1", CHAMPION, 500, 10.0)]  # another version: not the compared champion
    with CallTrail(audit.url, platform_home / "journal") as trail:
        for recorded in calls:
            trail.record(recorded)

    assert call_counts(audit.url, "churn", run, START + timedelta(hours=1)) == {
        CANARY: (10, 2),
        CHAMPION: (30, 0),
    }
    measured = measure_canary(policy_spec(), step, run, now=START + timedelta(hours=1))
    assert (measured.canary.calls, measured.canary.errors) == (10, 2)
    assert measured.canary.error_rate == pytest.approx(0.2)
    assert measured.latency_ratio == pytest.approx(2.0)
    assert measured.prediction_shift is not None and measured.prediction_shift > 0
    assert measured.notes == ["roc_auc not measured: no label source given"]
