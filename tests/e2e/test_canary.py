"""A canary end to end: started by its Dagster job, judged by its sensor on live calls, then
promoted through the promotion path or rolled back, with the reasons in the audit log and the UI.

The loans example (XGBoost, fast) is trained twice with unchanged data (the second forced), so
two versions passed their gates: v1 is the champion, v2 is not better and stays a challenger.
Calls go through the call trail's real write path (``CallTrail``: journal, then the audit
database), as the prediction service records them; their ids carry the loan id, whose outcome
the label source knows. A good canary (v2) is promoted once it answered ``min_calls`` calls
within every bound; a bad one (v1 against the new champion v2: 5xx errors and inverted scores)
is rolled back with the broken bounds as reasons.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.keys import CANARY_DECISION_TAG, FORCE_RETRAIN_TAG
from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.lifecycle.champion_audit import check_champion
from ml_platform.registry.client import ModelRegistry
from ml_platform.serving.calls import CallRecord, entity_key
from ml_platform.serving.journal import CallTrail
from tests.e2e import loans

pytestmark = pytest.mark.slow

MODEL = loans.MODEL
DEPLOYMENT = dg.AssetKey([MODEL, "deployment"])
DECIDED = "decided_at"
MIN_CALLS = 100


@dataclass
class World:
    """The loans model with two gated versions, its definitions, instance and engines."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    settings: PlatformSettings
    registry: ModelRegistry
    audit: AuditLog
    outcomes: pd.DataFrame


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The loans model trained twice on the same data (its own ML_PLATFORM_HOME)."""
    frames = loans.frames_with_label_time(DECIDED, timedelta(days=20))
    with loans.trained_world(
        tmp_path_factory.mktemp("canary"),
        frames=frames,
        feature_spec=loans.features_with_label_time(DECIDED),
        model={"flavor": "xgboost", "params": {"n_estimators": 40}},
        label={"source": "loan_outcomes", "column": "defaulted", "available_at_column": DECIDED},
        serving={
            "canary": {
                "traffic_share": 0.2,
                "min_calls": MIN_CALLS,
                "min_duration": "0m",
                "max_error_rate": 0.02,
                "max_prediction_shift": 0.25,
            }
        },
    ) as trained:
        forced = trained.defs.resolve_job_def(f"{MODEL}_training").execute_in_process(
            instance=trained.instance, tags={FORCE_RETRAIN_TAG: "true"}
        )
        assert forced.success
        yield World(
            trained.defs,
            trained.instance,
            trained.settings,
            ModelRegistry.for_settings(trained.settings),
            AuditLog(trained.settings.audit_url),
            frames["loan_outcomes"],
        )


def record_calls(
    world: World,
    version: str,
    role: str,
    count: int,
    *,
    seed: int,
    errors: int = 0,
    inverted: bool = False,
) -> None:
    """Record ``count`` answered calls of loans whose outcome is known, through the call trail.

    Scores follow the outcome (a good model); ``inverted`` turns them around (a bad one). The
    first ``errors`` calls failed with a 500.
    """
    rng = np.random.default_rng(seed)
    loans_called = world.outcomes.sample(count, random_state=seed)
    outcome = loans_called["defaulted"].to_numpy()
    scores = np.clip(0.25 + 0.5 * outcome + rng.normal(0, 0.1, count), 0, 1)
    if inverted:
        scores = 1 - scores
    journal = Path(world.settings.home) / "journal" / uuid.uuid4().hex
    with CallTrail(world.settings.audit_url, journal) as trail:
        for i, (loan, applicant) in enumerate(
            zip(loans_called["loan_id"], loans_called["applicant_id"], strict=True)
        ):
            failed = i < errors
            trail.record(
                CallRecord(
                    request_id=uuid.uuid4().hex,
                    called_at=datetime.now(UTC),
                    model=MODEL,
                    model_version=version,
                    role=role,
                    caller="checkout",
                    entity_key=entity_key({"applicant_id": int(applicant)}),
                    status_code=500 if failed else 200,
                    latency_ms=float(rng.uniform(4, 6)),
                    identifiers={"loan_id": int(loan)},
                    error="model failed" if failed else None,
                    prediction=None if failed else float(scores[i]),
                )
            )


def tick(world: World) -> dg.SensorExecutionData:
    """One evaluation of the model's canary sensor, as the daemon runs it."""
    sensor = world.defs.resolve_sensor_def(f"canary_{MODEL}")
    # build_sensor_context takes the sensor's resources from `resources`, not `definitions`.
    resources = {key: (world.defs.resources or {})[key] for key in sensor.required_resource_keys}
    with dg.build_sensor_context(
        instance=world.instance, definitions=world.defs, resources=resources
    ) as context:
        return sensor.evaluate_tick(context)


def run_requested(world: World, request: dg.RunRequest) -> None:
    """Run what the sensor requested (the asset, its run config and tags) in process."""
    job = world.defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=world.instance,
        run_config=request.run_config,
        asset_selection=request.asset_selection,
        tags=request.tags,
    )
    assert result.success


def start_canary(world: World) -> None:
    job = world.defs.resolve_job_def(f"start_canary_{MODEL}")
    assert job.execute_in_process(instance=world.instance).success


def latest_metadata(world: World) -> dict[str, object]:
    event = world.instance.get_latest_materialization_event(DEPLOYMENT)
    assert event is not None and event.asset_materialization is not None
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def the_only_request(data: dg.SensorExecutionData) -> dg.RunRequest:
    assert data.run_requests is not None and len(data.run_requests) == 1, data.skip_message
    return data.run_requests[0]


def test_a_good_canary_is_promoted_then_a_bad_one_rolled_back(world: World) -> None:
    assert world.registry.serving_state(MODEL).champion == "1"
    assert "no canary of loan_default runs" in (tick(world).skip_message or "")

    # Started through its job: the newest gated version that is not the champion, at 20%.
    start_canary(world)
    state = world.registry.serving_state(MODEL)
    assert (state.champion, state.canary, state.canary_share) == ("1", "2", 0.2)
    started = world.audit.events(MODEL, "canary_started")[-1]
    assert started.model_version == "2"
    assert started.details["share"] == 0.2 and "newest version" in started.details["reason"]
    assert latest_metadata(world)["canary_version"] == "2"

    record_calls(world, "2", "canary", MIN_CALLS // 2, seed=1)
    waiting = tick(world).skip_message or ""
    assert f"{MIN_CALLS // 2} of {MIN_CALLS} calls needed" in waiting

    record_calls(world, "2", "canary", MIN_CALLS, seed=2)
    record_calls(world, "1", "champion", 4 * MIN_CALLS, seed=3)
    request = the_only_request(tick(world))
    assert request.run_key is not None and request.run_key.startswith("2:")
    assert request.run_key.endswith(":promote")
    # The next tick asks for the same run key: the daemon launches it once.
    assert the_only_request(tick(world)).run_key == request.run_key

    # While that run is queued, the sensor says so instead of asking again.
    job = world.defs.resolve_job_def(f"start_canary_{MODEL}")
    queued = world.instance.create_run_for_job(job, tags=request.tags)
    assert f"already requested: run {queued.run_id}" in (tick(world).skip_message or "")
    world.instance.delete_run(queued.run_id)

    run_requested(world, request)
    assert world.registry.serving_state(MODEL).champion == "2"
    assert world.registry.serving_state(MODEL).canary is None
    promoted = world.audit.events(MODEL, "promoted")[-1]
    assert promoted.model_version == "2"
    assert promoted.details["via"] == "canary"
    assert promoted.details["previous_champion"] == "1"
    assert promoted.details["figures"]["canary"]["calls"] == MIN_CALLS * 3 // 2
    assert any(r.startswith("error rate 0.00% <= bound") for r in promoted.details["reasons"])
    # The audit log explains the new champion: scoring accepts it.
    assert not check_champion(world.registry, world.audit, MODEL).unexplained
    metadata = latest_metadata(world)
    assert metadata["decision"] == "promote"
    assert "p99 latency ratio" in str(metadata["reasons"])
    assert "roc_auc drop" in str(metadata["reasons"])  # labelled calls were judged
    assert "no canary of loan_default runs" in (tick(world).skip_message or "")
    runs = world.instance.get_runs(dg.RunsFilter(tags={CANARY_DECISION_TAG: request.run_key}))
    assert len(runs) == 1

    # Now v1 is the gated challenger: a canary that fails calls and inverts its scores.
    start_canary(world)
    assert world.registry.serving_state(MODEL).canary == "1"
    # 114 answered calls: enough labelled ones to judge the performance too.
    record_calls(world, "1", "canary", MIN_CALLS + 20, seed=4, errors=6, inverted=True)
    record_calls(world, "2", "champion", 4 * MIN_CALLS, seed=5)
    request = the_only_request(tick(world))
    assert request.run_key is not None and request.run_key.endswith(":rollback")
    run_requested(world, request)
    state = world.registry.serving_state(MODEL)
    assert (state.champion, state.canary) == ("2", None)
    rolled_back = world.audit.events(MODEL, "canary_rolled_back")[-1]
    assert rolled_back.model_version == "1"
    reasons = rolled_back.details["reasons"]
    assert reasons[0] == (
        f"error rate 5.00% > bound 2.00% (6 of {MIN_CALLS + 20} canary calls answered 5xx)"
    )
    assert any(r.startswith("prediction shift") and "> bound 0.250" in r for r in reasons)
    assert any(r.startswith("roc_auc drop") and "> bound" in r for r in reasons)
    metadata = latest_metadata(world)
    assert metadata["decision"] == "rollback"
    assert "error rate 5.00% > bound 2.00%" in str(metadata["reasons"])
    assert world.audit.events(MODEL, "promoted")[-1].model_version == "2"  # nothing promoted
