"""Bad data never trains a model, and a worse or unfair model is never promoted, whichever way
the run starts: a job, an asset selection, a schedule tick, a sensor request, an automation tick.

Real GE 1.x, real Feast, real SQLite MLflow. A good champion (version 1) and its predictions are
built once; each test starts from a copy of that state in the same place on disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.core.storage import read_pointer
from ml_platform.definitions import build_definitions
from ml_platform.registry.client import ModelRegistry
from resources import AuditLogResource, StorageResource
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = loans.MODEL
LAUNCHES = ("job", "asset_selection", "schedule", "sensor", "automation")
ALERTS: list[Any] = []


def capture_alert(alert: Any) -> None:
    """An ML_PLATFORM_ALERT_HANDLER for tests."""
    ALERTS.append(alert)


@dataclass
class World:
    home: Path
    specs: Path
    settings: PlatformSettings

    def definitions(self, **spec_changes: Any) -> dg.Definitions:
        loans.write_specs(self.specs, **spec_changes)
        return build_definitions(PROJECT_ROOT, spec_path=str(self.specs))

    def state(self) -> dict[str, Any]:
        predictions = read_pointer(self.settings.data_path("models", MODEL, "predictions"))
        return {
            "versions": ModelRegistry.for_settings(self.settings).registered_versions(MODEL),
            "champion": ModelRegistry.for_settings(self.settings).champion_version(MODEL),
            "predictions": predictions["path"] if predictions else None,
            "trained": len(AuditLog(self.settings.audit_url).events(MODEL, "trained")),
        }


def _point_environment_at(home: Path, specs: Path) -> None:
    os.environ["ML_PLATFORM_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ["ML_PLATFORM_SPEC_PATH"] = str(specs)


@pytest.fixture(scope="module")
def champion_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Version 1 trained, promoted and scored on good data; saved once for the module."""
    root = tmp_path_factory.mktemp("gates")
    home, specs, snapshot = root / "home", root / "specs", root / "snapshot"
    saved = {
        k: os.environ.get(k) for k in ("ML_PLATFORM_HOME", "DAGSTER_HOME", "ML_PLATFORM_SPEC_PATH")
    }
    _point_environment_at(home, specs)
    (home / "dagster").mkdir(parents=True)
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    loans.write_specs(specs, retraining={"schedule": "0 4 * * *", "automation": True})
    defs = build_definitions(PROJECT_ROOT, spec_path=str(specs))
    with dg.DagsterInstance.get() as instance:
        for job in (f"{MODEL}_training", f"{MODEL}_scoring"):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance).success
    assert ModelRegistry.for_settings(settings).champion_version(MODEL) == "1"
    shutil.copytree(home, snapshot)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def forget_mlflow_stores() -> None:
    """MLflow caches one store (and its open SQLite connections) per URI; the restored database
    is a new file at the same path, so the cached connections must go."""
    from mlflow.store.model_registry.sqlalchemy_store import (
        SqlAlchemyStore as RegistrySqlAlchemyStore,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    for store in (SqlAlchemyStore, RegistrySqlAlchemyStore):
        for engine in store._engine_map.values():
            engine.dispose()
        store._engine_map.clear()


@pytest.fixture
def world(champion_snapshot: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """The champion state restored at its original path (MLflow and pointers hold paths)."""
    home, specs = champion_snapshot / "home", champion_snapshot / "specs"
    forget_mlflow_stores()
    shutil.rmtree(home)
    shutil.copytree(champion_snapshot / "snapshot", home)
    for key, value in (
        ("ML_PLATFORM_HOME", home),
        ("DAGSTER_HOME", home / "dagster"),
        ("ML_PLATFORM_SPEC_PATH", specs),
    ):
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("ML_PLATFORM_ALERT_HANDLER", f"{__name__}:capture_alert")
    ALERTS.clear()
    return World(home=home, specs=specs, settings=PlatformSettings.from_env())


def launch(how: str, defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Start the model's retraining the way a user, a schedule, a sensor or automation would."""
    job_name = f"{MODEL}_training"
    model = dg.AssetKey([MODEL, "model"])
    requests: list[dg.RunRequest] = []
    if how == "job":
        requests = [dg.RunRequest(job_name=job_name)]
    elif how == "asset_selection":
        graph = defs.resolve_asset_graph()
        keys = {
            key
            for key in dg.AssetSelection.assets(model).upstream().resolve(graph)
            if graph.get(key).is_executable  # external sources are not materialized
        }
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=sorted(keys), raise_on_error=False
        )
        return [instance.get_run_by_id(result.run_id)]  # type: ignore[list-item]
    elif how == "schedule":
        schedule = defs.resolve_schedule_def(f"{MODEL}_retraining_schedule")
        with dg.build_schedule_context(instance=instance) as context:
            requests = list(schedule.evaluate_tick(context).run_requests or [])
        assert len(requests) == 1
    elif how == "sensor":
        sensor = defs.resolve_sensor_def(f"{MODEL}_new_labels_sensor")
        context = dg.build_sensor_context(
            instance=instance, cursor="stale", resources={"storage": StorageResource()}
        )
        requests = list(sensor.evaluate_tick(context).run_requests or [])
        assert len(requests) == 1, "the sensor must notice the new labels"
    elif how == "automation":
        return automation_ticks(defs, instance)
    runs = []
    for request in requests:
        result = defs.resolve_job_def(request.job_name or job_name).execute_in_process(
            instance=instance, tags=request.tags, raise_on_error=False
        )
        runs.append(instance.get_run_by_id(result.run_id))
    return runs  # type: ignore[return-value]


def automation_ticks(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """New label data lands; automation ticks until it requests nothing more."""
    # A first tick records where the instance stands; updates after it are what "new" means.
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    instance.report_runless_asset_event(
        dg.AssetMaterialization(dg.AssetKey(["sources", "loan_outcomes"]))
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization(dg.AssetKey(["sources", "bureau_reports"]))
    )
    runs = []
    graph = defs.resolve_asset_graph()
    executable = [k for k in graph.get_all_asset_keys() if graph.get(k).is_executable]
    for _ in range(6):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        keys = {key for key in executable if result.get_num_requested(key)}
        if not keys:
            break
        run = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=sorted(keys), raise_on_error=False
        )
        runs.append(instance.get_run_by_id(run.run_id))
    return runs  # type: ignore[return-value]


def materialized_in(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> set[str]:
    keys = set()
    for run in runs:
        for key in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records:
            event = key.event_log_entry.dagster_event
            if event and event.asset_key:
                keys.add(event.asset_key.to_user_string())
    return keys


@pytest.mark.slow
@pytest.mark.parametrize("case", loans.BAD_CASES)
@pytest.mark.parametrize("how", LAUNCHES)
def test_bad_training_data_never_trains(world: World, how: str, case: str) -> None:
    before = world.state()
    loans.write_frames(world.settings, loans.bad_frames(case))
    defs = world.definitions(retraining={"schedule": "0 4 * * *", "automation": True})
    with dg.DagsterInstance.get() as instance:
        runs = launch(how, defs, instance)
        assert runs, f"{how} started no run"
        assert f"{MODEL}/model" not in materialized_in(instance, runs)
        assert f"{MODEL}/champion" not in materialized_in(instance, runs)
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey([MODEL, "training_set"]), "data_quality")]
        )
        evaluation = next(iter(check.values())).event  # type: ignore[union-attr]
        assert evaluation is not None
        result = evaluation.dagster_event.event_specific_data  # type: ignore[union-attr]
        assert result.passed is False
    assert world.state() == before


@pytest.mark.slow
def test_gate_failure_names_the_expectation_and_leaves_training_blocked(world: World) -> None:
    loans.write_frames(world.settings, loans.bad_frames("single_class"))
    defs = world.definitions()
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(f"{MODEL}_training").execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not result.success
        [evaluation] = result.get_asset_check_evaluations()[-1:]
        assert evaluation.check_name == "data_quality" and not evaluation.passed
        assert "expect_column_unique_value_count_to_be_between(column='defaulted'" in str(
            evaluation.description
        )
        # A later run that selects only the model still refuses the failed data.
        only_model = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey([MODEL, "model"])],
            raise_on_error=False,
        )
        assert not only_model.success
        failure = only_model.get_step_failure_events()[0]
        assert "failed its data gate" in str(failure.event_specific_data.error)  # type: ignore[union-attr]
        # The failure sensor alerts, naming the failed check.
        sensor = defs.resolve_sensor_def("ml_platform_failure_alerts")
        run = instance.get_run_by_id(result.run_id)
        failure_event = (
            instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            .records[0]
            .event_log_entry.dagster_event
        )
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_instance=instance,
            dagster_run=run,  # type: ignore[arg-type]
            dagster_event=failure_event,  # type: ignore[arg-type]
            resources={"storage": StorageResource(), "audit": AuditLogResource()},
        ).for_run_failure()
        sensor(context)  # type: ignore[operator]
    assert ALERTS and any("data_quality failed" in reason for reason in ALERTS[-1].reasons)
    assert world.state()["versions"] == ["1"]


@pytest.mark.slow
def test_worse_challenger_is_registered_but_not_promoted(world: World) -> None:
    # Without the bureau features the model can only guess from the amount: clearly worse.
    defs = world.definitions(features={"request": ["amount"]})
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(f"{MODEL}_training").execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success  # the blocking regression gate fails the run visibly
    assert ModelRegistry.for_settings(world.settings).registered_versions(MODEL) == ["1", "2"]
    assert ModelRegistry.for_settings(world.settings).champion_version(MODEL) == "1"
    tags = ModelRegistry.for_settings(world.settings).version_tags(MODEL, "2")
    assert tags["ml_platform.promotion"] == "rejected"
    assert "no_regression_vs_champion" in tags["ml_platform.promotion_reason"]
    assert tags["ml_platform.gate.no_regression_vs_champion"] == "failed"
    [rejected] = AuditLog(world.settings.audit_url).events(MODEL, "rejected")
    assert rejected.model_version == "2"
    assert "roc_auc" in " ".join(rejected.details["reasons"])


@pytest.mark.slow
def test_unfair_challenger_is_not_promoted_and_override_is_audited(world: World) -> None:
    gates = {
        "data": {"min_rows": 500, "label_balance": [0.02, 0.6], "pii_columns": ["national_id"]},
        "evaluation": {"slices": [{"column": "region", "max_disparity": {"recall": 0.0001}}]},
    }
    defs = world.definitions(gates=gates)
    with dg.DagsterInstance.get() as instance:
        # Gates do not change the model: the inputs are unchanged, so the challenger is forced.
        result = defs.resolve_job_def(f"{MODEL}_training").execute_in_process(
            instance=instance, raise_on_error=False, tags={"ml_platform/force_retrain": "true"}
        )
        assert not result.success
        assert ModelRegistry.for_settings(world.settings).champion_version(MODEL) == "1"
        tags = ModelRegistry.for_settings(world.settings).version_tags(MODEL, "2")
        assert "slices_meet_thresholds" in tags["ml_platform.promotion_reason"]
        assert "recall gap between slices" in tags["ml_platform.promotion_reason"]

        override = defs.resolve_job_def(f"{MODEL}_promote_override")
        too_short = {
            "ops": {
                f"{MODEL}_override_champion": {
                    "config": {
                        "version": "2",
                        "reason": "trust me",
                        "requested_by": "ada@example.com",
                    }
                }
            }
        }
        assert not override.execute_in_process(
            instance=instance, run_config=too_short, raise_on_error=False
        ).success
        assert ModelRegistry.for_settings(world.settings).champion_version(MODEL) == "1"
        reason = "regional recall gap accepted by risk committee, ticket RISK-118"
        config = {
            "ops": {
                f"{MODEL}_override_champion": {
                    "config": {"version": "2", "reason": reason, "requested_by": "ada@example.com"}
                }
            }
        }
        assert override.execute_in_process(instance=instance, run_config=config).success
    assert ModelRegistry.for_settings(world.settings).champion_version(MODEL) == "2"
    tags = ModelRegistry.for_settings(world.settings).version_tags(MODEL, "2")
    assert tags["ml_platform.promotion"] == "override"
    assert tags["ml_platform.override_reason"] == reason
    [event] = AuditLog(world.settings.audit_url).events(MODEL, "override_promoted")
    assert event.details["requested_by"] == "ada@example.com"
    assert event.details["previous_champion"] == "1"


@pytest.mark.slow
def test_pii_values_never_reach_metadata_logs_or_ge_results(world: World) -> None:
    canary = "CANARY-PII-7f3a"
    frames = loans.good_frames()
    frames["loan_outcomes"].loc[:40, "national_id"] = canary  # duplicates: the gate fails on it
    loans.write_frames(world.settings, frames)
    gates = {
        "data": {
            "min_rows": 500,
            "pii_columns": ["national_id"],
            "expectations": [
                {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "national_id"}}
            ],
        }
    }
    defs = world.definitions(gates=gates)
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(f"{MODEL}_training").execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not result.success
        events = instance.all_logs(result.run_id)
        assert any(
            e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
            for e in events
        )
        for entry in events:
            assert canary not in str(entry), entry
    for path in world.home.rglob("*"):
        if path.is_file() and path.suffix in (
            ".json",
            ".html",
            ".log",
            ".txt",
            ".out",
            ".err",
            ".jsonl",
            ".yml",
            ".yaml",
        ):
            assert canary not in path.read_text(errors="ignore"), path


@pytest.mark.slow
def test_automation_does_retrain_on_good_new_data(world: World) -> None:
    """The control for the automation cases above: with good data it does train and promote."""
    frames = loans.good_frames(seed=1)
    loans.write_frames(world.settings, frames)
    defs = world.definitions(retraining={"schedule": "0 4 * * *", "automation": True})
    with dg.DagsterInstance.get() as instance:
        runs = automation_ticks(defs, instance)
        assert {f"{MODEL}/training_set", f"{MODEL}/model", f"{MODEL}/evaluation"} <= (
            materialized_in(instance, runs)
        )
    assert world.state()["versions"] == ["1", "2"]


@pytest.mark.slow
def test_bad_feature_data_blocks_every_training_set_built_on_it(world: World) -> None:
    frames = loans.good_frames()
    frames["bureau_reports"].loc[:20, "credit_score"] = float("inf")
    loans.write_frames(world.settings, frames)
    defs = world.definitions()
    with dg.DagsterInstance.get() as instance:
        features = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(["features", "bureau"])],
            raise_on_error=False,
        )
        assert not features.success
        [evaluation] = features.get_asset_check_evaluations()
        assert not evaluation.passed
        assert "expect_column_values_to_be_between(column='credit_score'" in str(
            evaluation.description
        )
        # A later run of the training set alone does not use the failed feature view.
        training_set = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey([MODEL, "training_set"])],
            raise_on_error=False,
        )
        assert not training_set.success
        error = training_set.get_step_failure_events()[0].event_specific_data.error  # type: ignore[union-attr]
        assert "bureau failed their data gate" in str(error)
    assert world.state()["versions"] == ["1"]
