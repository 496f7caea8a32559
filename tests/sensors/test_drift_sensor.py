"""The drift sensor on a real Dagster instance: one retraining per drift event, never two.

Most tests write the model's current drift report directly (the pointer ``monitor_drift`` writes)
and evaluate the sensor with ``dg.build_sensor_context``; one test runs the daemon's own sensor
iteration (cursor in the instance's storage, run keys deduplicated by Dagster); one trains the
loans example, scores drifted data, reports it and runs the retraining the sensor requests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorType,
    SensorInstigatorData,
)

from assets.keys import (
    DRIFT_EVENT_TAG,
    DRIFT_REASONS_TAG,
    MODEL_TAG,
    drift_sensor_name,
    monitoring_job_name,
    training_job_name,
)
from ml_platform.cli.main import main
from ml_platform.core import storage
from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.evaluation.gates import EVALUATION_GATES
from ml_platform.lifecycle.records import (
    DriftReportRecord,
    current_drift_report,
    current_evaluation,
    model_root,
)
from ml_platform.registry.client import ModelRegistry
from sensors.drift import DriftCursor
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = loans.MODEL
SENSOR = drift_sensor_name(MODEL)
TRAINING = training_job_name(MODEL)
MONITORING = {"retrain_on": {"drift_share": 0.5}, "cooldown": "6h"}


@dataclass
class Project:
    """The loans model's definitions (with monitoring), its settings and a real instance."""

    defs: dg.Definitions
    settings: PlatformSettings
    instance: dg.DagsterInstance


@pytest.fixture
def project(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    spec_dir = loans.write_specs(tmp_path / "specs", monitoring=MONITORING)
    monkeypatch.setenv("ML_PLATFORM_SPEC_PATH", str(spec_dir))  # the CLI finds the model
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    instance_dir = platform_home / "dagster"
    with dg.DagsterInstance.local_temp(str(instance_dir)) as instance:
        yield Project(defs, PlatformSettings.from_env(), instance)


def write_report(
    settings: PlatformSettings,
    report_id: str,
    status: str = "drift",
    retrain_reasons: tuple[str, ...] = ("drift_share",),
) -> None:
    """Make ``report_id`` the model's current drift report, as ``monitor_drift`` does."""
    drifted = status == "drift"
    record = DriftReportRecord(
        model=MODEL,
        model_version="1",
        report_id=report_id,
        status=status,  # type: ignore[arg-type]
        drift_share=2 / 3 if drifted else 0.0,
        drifted_features=["credit_score", "debt_ratio"] if drifted else [],
        prediction_drift=drifted,
        performance=None,
        rows=40 if status == "insufficient_data" else 2000,
        html_path=None,
        created_at=datetime.now(UTC).isoformat(),
        retrain_reasons=list(retrain_reasons),
        reason="40 rows, fewer than monitoring.min_rows (100)"
        if status == "insufficient_data"
        else None,
    )
    storage.write_pointer(model_root(settings, MODEL, "drift"), record.to_dict())


def evaluate(project: Project, cursor: str | None = None) -> dg.SensorExecutionData:
    """One evaluation of the model's drift sensor, as a tick would run it."""
    sensor = project.defs.resolve_sensor_def(SENSOR)
    # build_sensor_context takes the sensor's resources from `resources`, not `definitions`.
    resources = {key: (project.defs.resources or {})[key] for key in sensor.required_resource_keys}
    with dg.build_sensor_context(
        instance=project.instance, cursor=cursor, definitions=project.defs, resources=resources
    ) as context:
        return sensor.evaluate_tick(context)


def test_a_drift_event_requests_one_training_run_and_never_again(project: Project) -> None:
    write_report(project.settings, "r1")
    tick = evaluate(project)
    (request,) = tick.run_requests or []
    assert request.run_key == f"{MODEL}-drift-r1"
    assert project.defs.resolve_sensor_def(SENSOR).job_name == TRAINING
    assert request.tags[MODEL_TAG] == MODEL
    assert request.tags[DRIFT_EVENT_TAG] == "r1"
    assert request.tags[DRIFT_REASONS_TAG] == "drift_share"
    cursor = DriftCursor.parse(tick.cursor)
    assert cursor.report_id == "r1" and cursor.event_id == "r1"
    assert cursor.triggered_at is not None

    again = evaluate(project, tick.cursor)
    assert not again.run_requests
    assert again.skip_message == "no new drift report (last: r1) or alert"


@pytest.mark.parametrize(
    ("status", "reasons", "skip"),
    [
        ("insufficient_data", (), "insufficient data in drift report r1: 40 rows"),
        ("ok", (), "below threshold: drift report r1 fired no monitoring.retrain_on trigger"),
        ("drift", (), "below threshold: drift report r1 fired no monitoring.retrain_on trigger"),
    ],
)
def test_a_report_that_fires_no_trigger_is_skipped_with_the_reason(
    project: Project, status: str, reasons: tuple[str, ...], skip: str
) -> None:
    assert evaluate(project).skip_message == "no new drift report (last: none yet) or alert"
    write_report(project.settings, "r1", status, reasons)
    tick = evaluate(project)
    assert not tick.run_requests
    assert (tick.skip_message or "").startswith(skip), tick.skip_message
    # Handled: the same report is not judged again, and nothing was triggered.
    cursor = DriftCursor.parse(tick.cursor)
    assert cursor.report_id == "r1" and cursor.triggered_at is None


def test_a_new_event_inside_the_cooldown_waits_then_fires(project: Project) -> None:
    write_report(project.settings, "r1")
    first = evaluate(project)
    assert first.run_requests
    write_report(project.settings, "r2", retrain_reasons=("drift_share", "prediction_drift"))
    waiting = evaluate(project, first.cursor)
    assert not waiting.run_requests
    message = waiting.skip_message or ""
    assert message.startswith("cooldown: the last drift retraining (event r1) was requested at")
    assert "5h59m left of monitoring.cooldown" in message or "6h00m left" in message, message
    assert "drift report r2 fired drift_share, prediction_drift" in message
    assert waiting.cursor == first.cursor  # r2 waits: it is not marked handled

    # Seven hours later (the cursor's trigger time moved back), r2 retrains once.
    earlier = datetime.now(UTC) - timedelta(hours=7)
    cursor = DriftCursor.parse(first.cursor)
    expired = DriftCursor(cursor.report_id, cursor.alert_id, earlier.isoformat(), cursor.event_id)
    (request,) = evaluate(project, expired.dumps()).run_requests or []
    assert request.run_key == f"{MODEL}-drift-r2"
    assert request.tags[DRIFT_REASONS_TAG] == "drift_share,prediction_drift"


def test_a_running_training_run_makes_the_event_wait(project: Project) -> None:
    run = project.instance.create_run_for_job(
        project.defs.resolve_job_def(TRAINING),
        status=dg.DagsterRunStatus.STARTED,
        tags={MODEL_TAG: MODEL},
    )
    write_report(project.settings, "r1")
    waiting = evaluate(project)
    assert not waiting.run_requests
    assert f"a training run is already queued or running ({run.run_id} (STARTED))" in (
        waiting.skip_message or ""
    )
    assert waiting.cursor is None  # nothing handled: the event fires once the run is over

    project.instance.report_run_canceled(run)
    (request,) = evaluate(project).run_requests or []
    assert request.run_key == f"{MODEL}-drift-r1"


def test_an_external_alert_from_the_cli_retrains_under_the_same_rules(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift-alert", MODEL, "--reason", "PSI 0.4 on amount", "--source", "arize"]) == 0
    output = capsys.readouterr().out
    alert_id = output.split("recorded drift alert ")[1].split()[0]
    assert f"run key {MODEL}-drift-{alert_id}" in output

    tick = evaluate(project)
    (request,) = tick.run_requests or []
    assert request.run_key == f"{MODEL}-drift-{alert_id}"
    assert request.tags[DRIFT_REASONS_TAG] == "external_alert"
    assert DriftCursor.parse(tick.cursor).alert_id == alert_id
    assert not evaluate(project, tick.cursor).run_requests  # the same alert: never again

    # A second alert inside the cooldown waits, like a drift report would.
    assert main(["drift-alert", MODEL, "--reason", "label delay doubled"]) == 0
    waiting = evaluate(project, tick.cursor)
    assert not waiting.run_requests
    assert (waiting.skip_message or "").startswith("cooldown:")
    assert "external drift alert" in (waiting.skip_message or "")
    assert "label delay doubled" in (waiting.skip_message or "")


def test_the_sensor_runs_by_default_only_where_the_spec_says_what_retrains(
    platform_home: Path, tmp_path: Path
) -> None:
    with_trigger = loans.write_specs(tmp_path / "on", monitoring=MONITORING)
    without = loans.write_specs(tmp_path / "off")
    explicit = loans.write_specs(tmp_path / "explicit", monitoring={"sensor": "running"})
    for spec_dir, status in (
        (with_trigger, dg.DefaultSensorStatus.RUNNING),
        (without, dg.DefaultSensorStatus.STOPPED),
        (explicit, dg.DefaultSensorStatus.RUNNING),
    ):
        defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
        assert defs.resolve_sensor_def(SENSOR).default_status == status, spec_dir.name


QUEUED_RUNS = {
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
}
"""The daemon queues the runs it submits, so the test counts them without running them."""


def daemon_tick(instance: dg.DagsterInstance) -> None:
    """One iteration of the sensor daemon over the code location, loaded in this process."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            module_name="ml_platform.definitions",
            attribute="defs",
            working_directory=str(PROJECT_ROOT),
        )
    )
    target = InProcessWorkspaceLoadTarget(origin)
    with create_test_daemon_workspace_context(target, instance) as workspace:
        list(execute_sensor_iteration(workspace, logging.getLogger("daemon"), None, None))


def stored_state(instance: dg.DagsterInstance) -> tuple[InstigatorState, SensorInstigatorData]:
    """The drift sensor's state as the daemon stored it in the instance, and its data."""
    (state,) = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if s.instigator_name == SENSOR
    ]
    assert isinstance(state.instigator_data, SensorInstigatorData)
    return state, state.instigator_data


def runs_of_event(instance: dg.DagsterInstance, event_id: str) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/run_key": f"{MODEL}-drift-{event_id}"})
        )
    )


def test_the_daemon_keeps_the_cursor_and_starts_one_run_per_event(
    project: Project, tmp_path: Path
) -> None:
    write_report(project.settings, "r1")
    # Two evaluations racing on the same event (same cursor, neither sees the other's run)
    # request the same run key; Dagster submits at most one run per run key and sensor.
    racing = [evaluate(project).run_requests or [] for _ in range(2)]
    assert [r.run_key for requests in racing for r in requests] == [f"{MODEL}-drift-r1"] * 2

    instance_dir = tmp_path / "daemon_instance"
    instance_dir.mkdir()
    with dg.DagsterInstance.local_temp(str(instance_dir), overrides=QUEUED_RUNS) as instance:
        daemon_tick(instance)
        (run,) = runs_of_event(instance, "r1")
        assert run.status == dg.DagsterRunStatus.QUEUED and run.job_name == TRAINING
        assert run.tags[DRIFT_EVENT_TAG] == "r1"
        assert DriftCursor.parse(stored_state(instance)[1].cursor).report_id == "r1"

        # Replay the racing evaluation: the cursor from before the run, and (worst case) the
        # first run already over, so the in-flight check cannot hold it back: its run request
        # has the same run key, and the daemon starts no second run.
        instance.report_run_canceled(run)
        state, data = stored_state(instance)
        instance.update_instigator_state(
            state.with_data(
                data._replace(cursor=None, last_tick_timestamp=None, last_tick_start_timestamp=None)
            )
        )
        daemon_tick(instance)
        state, _ = stored_state(instance)
        replayed, first = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        assert (first.status.value, first.run_ids) == ("SUCCESS", [run.run_id])
        # The replayed tick requested the same run key, and the daemon skipped it.
        assert (replayed.status.value, replayed.run_keys) == ("SKIPPED", [f"{MODEL}-drift-r1"])
        assert replayed.run_ids == []
        assert len(runs_of_event(instance, "r1")) == 1
        assert len(instance.get_runs(filters=dg.RunsFilter(job_name=TRAINING))) == 1

    # A daemon restarted on the same storage (a fresh instance) finds the cursor and skips.
    with dg.DagsterInstance.local_temp(str(instance_dir), overrides=QUEUED_RUNS) as fresh:
        restored = stored_state(fresh)[1].cursor
        assert DriftCursor.parse(restored).report_id == "r1"
        again = evaluate(Project(project.defs, project.settings, fresh), restored)
        assert not again.run_requests
        assert again.skip_message == "no new drift report (last: r1) or alert"


def drifted_frames(base: dict[str, pd.DataFrame], rows: int = 600) -> dict[str, pd.DataFrame]:
    """Loan applications 310 days on, after new bureau reports with scores and debt shifted."""
    window_start = pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=310)
    rng = np.random.default_rng(11)
    new = loans.good_frames(rows=rows, seed=11)["loan_outcomes"]
    new = new.assign(
        loan_id=new["loan_id"] + int(base["loan_outcomes"]["loan_id"].max()) + 1,
        applied_at=window_start + pd.to_timedelta(rng.integers(0, 5 * 86400, rows), "s"),
    )
    bureau = base["bureau_reports"]
    shifted = bureau.assign(
        reported_at=window_start - pd.Timedelta(days=2),
        credit_score=bureau["credit_score"] + 150.0,
        debt_ratio=(bureau["debt_ratio"] + 0.6).clip(upper=1.6),
    )
    return {
        "bureau_reports": pd.concat([bureau, shifted], ignore_index=True),
        "loan_outcomes": pd.concat([base["loan_outcomes"], new], ignore_index=True),
    }


@pytest.mark.slow
def test_drift_retrains_once_through_the_gates_end_to_end(
    platform_home: Path, tmp_path: Path
) -> None:
    spec_dir = loans.write_specs(
        tmp_path / "specs",
        model={"flavor": "xgboost", "params": {"n_estimators": 40}},
        monitoring=MONITORING,
    )
    settings = PlatformSettings.from_env()
    base = loans.good_frames()
    loans.write_frames(settings, base)
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    registry = ModelRegistry.for_settings(settings)
    with dg.DagsterInstance.local_temp(str(platform_home / "dagster")) as instance:
        project = Project(defs, settings, instance)
        assert defs.resolve_job_def(TRAINING).execute_in_process(instance=instance).success
        assert registry.champion_version(MODEL) == "1"

        # New applications arrive with shifted bureau data: the monitoring job scores and
        # reports them.
        loans.write_frames(settings, drifted_frames(base))
        monitoring = defs.resolve_job_def(monitoring_job_name(MODEL))
        assert monitoring.execute_in_process(instance=instance).success
        report = current_drift_report(settings, MODEL)
        assert report.status == "drift", report
        assert set(report.drifted_features) == {"credit_score", "debt_ratio"}
        assert report.retrain_reasons == ["drift_share"]

        tick = evaluate(project)
        (request,) = tick.run_requests or []
        assert request.run_key == f"{MODEL}-drift-{report.report_id}"
        retraining = defs.resolve_job_def(TRAINING).execute_in_process(
            instance=instance, tags=dict(request.tags), raise_on_error=False
        )
        run = instance.get_run_by_id(retraining.run_id)
        assert run is not None and run.tags[DRIFT_EVENT_TAG] == report.report_id

        # A new version, trained on the new data and judged by every gate against the champion.
        assert registry.registered_versions(MODEL) == ["1", "2"]
        evaluation = current_evaluation(settings, MODEL)
        assert (evaluation.version, evaluation.champion_version) == ("2", "1")
        checks = {e.check_name for e in retraining.get_asset_check_evaluations()}
        assert {"data_quality", *EVALUATION_GATES} <= checks
        assert registry.champion_version(MODEL) in ("1", "2")

        again = evaluate(project, tick.cursor)
        assert not again.run_requests
        assert again.skip_message == f"no new drift report (last: {report.report_id}) or alert"
