"""A code location with a hundred models loads whole, and nothing it caches outlives a change.

The specs are copies of the example's (``examples/many_models.py``, as ``bench/load_time.py``
times them). No timing here: the figures come from the bench.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.execution.build_resources import wrap_resources_for_execution

from assets.jobs import ScopedAssetJob
from assets.keys import (
    DATA_GATE,
    MODEL_ASSETS,
    NO_SIGNIFICANT_DRIFT,
    drift_sensor_name,
    model_key,
    monitoring_job_name,
    monitoring_schedule_name,
    new_labels_sensor_name,
    override_job_name,
    retraining_schedule_name,
    scoring_job_name,
    scoring_schedule_name,
    training_job_name,
)
from examples.many_models import write_model_specs
from ml_platform.compute.kubernetes import MAX_RUNTIME_TAG
from ml_platform.compute.profiles import PROFILES_ENV, load_profiles
from ml_platform.definitions import build_definitions
from ml_platform.evaluation.gates import EVALUATION_GATES
from resources import AuditLogResource, ModelRegistryResource, StorageResource
from sensors.automation import AUTOMATION_SENSOR
from sensors.champion import CHAMPION_SENSOR

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODELS = 100


@pytest.fixture(scope="module")
def many_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """The example plus 99 copies: the spec directory and every model's document."""
    spec_dir = tmp_path_factory.mktemp("specs")
    files = write_model_specs(spec_dir, MODELS - 1)
    example = yaml.safe_load((PROJECT_ROOT / "assets/fraud_detection/model.yaml").read_text())
    return spec_dir, [example, *(yaml.safe_load(f.read_text()) for f in files)]


def _counts(defs: dg.Definitions) -> dict[str, int]:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    return {
        "assets": len(graph.get_all_asset_keys()),
        "checks": len(graph.asset_check_keys),
        "jobs": len(repo.get_all_jobs()),
        # The automation sensor is one for all, present once any model automates.
        "sensors": len([s for s in repo.sensor_defs if s.name != AUTOMATION_SENSOR]),
    }


def test_a_hundred_models_load_whole(
    platform_home: Path, many_models: tuple[Path, list[dict]]
) -> None:
    spec_dir, documents = many_models
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    jobs = {job.name for job in repo.get_all_jobs()}
    sensors = {sensor.name for sensor in repo.sensor_defs}
    schedules = {schedule.name: schedule for schedule in repo.schedule_defs}
    expected_schedules = set()
    for document in documents:
        name = document["name"]
        for asset in MODEL_ASSETS:
            assert graph.has(model_key(name, asset)), (name, asset)
        checks = {key.name for key in graph.asset_check_keys if key.asset_key.path[0] == name}
        assert checks == {DATA_GATE, *EVALUATION_GATES, NO_SIGNIFICANT_DRIFT}, name
        for job in (training_job_name, scoring_job_name, monitoring_job_name, override_job_name):
            assert job(name) in jobs
        assert {new_labels_sensor_name(name), drift_sensor_name(name)} <= sensors
        cadences = {
            retraining_schedule_name(name): document.get("retraining", {}).get("schedule"),
            monitoring_schedule_name(name): document.get("monitoring", {}).get("schedule"),
            scoring_schedule_name(name): document.get("scoring", {}).get("schedule"),
        }
        for schedule, cron in cadences.items():
            if cron:
                assert schedules[schedule].cron_schedule == cron
                expected_schedules.add(schedule)
        drift = repo.get_sensor_def(drift_sensor_name(name))
        retrains = "retrain_on" in document.get("monitoring", {})
        assert (drift.default_status == dg.DefaultSensorStatus.RUNNING) == retrains, name
    assert set(schedules) == expected_schedules
    # The copies vary what grows per model: both flavors, automation, drift retraining.
    flavors = {document.get("model", {}).get("flavor", "torch") for document in documents}
    assert flavors == {"torch", "xgboost"}
    assert AUTOMATION_SENSOR in sensors

    # Each model adds the same number of assets, checks, jobs and sensors as the first.
    one = _counts(build_definitions(PROJECT_ROOT, spec_path=""))
    many = _counts(defs)
    for kind in one:
        assert many[kind] > one[kind], kind
        assert (many[kind] - one[kind]) % (MODELS - 1) == 0, (kind, one, many)


def test_scoped_jobs_resolve_as_dagster_resolves_them(
    platform_home: Path, many_models: tuple[Path, list[dict]]
) -> None:
    """Each model's job, resolved on its scope, is the job Dagster makes from the whole graph."""
    spec_dir, documents = many_models
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    resources = wrap_resources_for_execution(repo.get_top_level_resources())
    scoped = [job for job in defs.jobs or [] if isinstance(job, ScopedAssetJob)]
    scoped += [
        target.job_def
        for sensor in repo.sensor_defs
        for target in sensor.targets
        if target.has_job_def and isinstance(target.job_def, ScopedAssetJob)
    ]
    # training, scoring, monitoring, start_canary and the canary sensor's job, per model
    assert len(scoped) == 5 * len(documents)
    for job in scoped:
        ours = job.resolve(graph, None, resources)
        dagsters = UnresolvedAssetJobDefinition.resolve(job, graph, None, resources)
        assert ours.get_job_snapshot_id() == dagsters.get_job_snapshot_id(), job.name
        layer, expected = ours.asset_layer, dagsters.asset_layer
        assert layer.selected_asset_keys == expected.selected_asset_keys, job.name
        assert layer.asset_graph.get_all_asset_keys() == (
            expected.asset_graph.get_all_asset_keys()
        ), job.name
        assert layer.asset_graph.asset_check_keys == expected.asset_graph.asset_check_keys, job.name
        assert layer.asset_graph.executable_asset_keys == (
            expected.asset_graph.executable_asset_keys
        ), job.name
    # A run of part of a job (as the UI launches one) resolves on the scope alike.
    name = documents[3]["name"]
    training = repo.get_job(training_job_name(name))
    part = {model_key(name, "model"), model_key(name, "evaluation")}
    subset = training.get_subset(asset_selection=part)
    assert subset.asset_layer.selected_asset_keys == part
    assert subset.asset_layer.asset_graph.asset_check_keys >= {
        key for key in graph.asset_check_keys if key.asset_key in part
    }


def test_each_override_job_overrides_its_own_model(
    platform_home: Path, many_models: tuple[Path, list[dict]]
) -> None:
    spec_dir, documents = many_models
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    name = documents[7]["name"]
    node = f"{name}_override_champion"
    config = {
        "version": "999",
        "reason": "a reason long enough for the override",
        "requested_by": "ada@example.com",
    }
    result = defs.resolve_job_def(override_job_name(name)).execute_in_process(
        run_config={"ops": {node: {"config": config}}}, raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node(node)
    assert failure is not None and failure.error is not None and failure.error.cause is not None
    assert f"model '{name}' has no version '999'" in failure.error.cause.message


def test_a_changed_spec_or_profile_file_is_read_again(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_dir = tmp_path / "specs"
    [spec_file] = write_model_specs(spec_dir, 1)
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        "profiles:\n  team-gpu: {cpu: '4', memory: 16Gi, max_runtime_seconds: 3600}\n"
    )
    monkeypatch.setenv(PROFILES_ENV, str(profiles))
    document = yaml.safe_load(spec_file.read_text())
    document["compute"] = {"profile": "team-gpu"}
    spec_file.write_text(yaml.safe_dump(document))
    name = document["name"]
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    assert defs.resolve_schedule_def(retraining_schedule_name(name)).cron_schedule == "0 3 * * 1"
    assert load_profiles()["team-gpu"].memory == "16Gi"
    assert defs.resolve_job_def(training_job_name(name)).tags[MAX_RUNTIME_TAG] == "3600"

    document["retraining"] = {"schedule": "30 4 * * *"}
    spec_file.write_text(yaml.safe_dump(document))
    profiles.write_text(
        "profiles:\n  team-gpu: {cpu: '4', memory: 32Gi, max_runtime_seconds: 7200}\n"
    )
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    assert defs.resolve_schedule_def(retraining_schedule_name(name)).cron_schedule == "30 4 * * *"
    assert load_profiles()["team-gpu"].memory == "32Gi"
    assert defs.resolve_job_def(training_job_name(name)).tags[MAX_RUNTIME_TAG] == "7200"

    profiles.write_text("profiles:\n  other-gpu: {cpu: '4', memory: 16Gi}\n")
    monkeypatch.setenv("ML_PLATFORM_STRICT", "1")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="team-gpu"):
        build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))


def test_the_champion_sensor_of_a_fresh_home_asks_no_mlflow(
    platform_home: Path, many_models: tuple[Path, list[dict]]
) -> None:
    spec_dir, _ = many_models
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    context = dg.build_sensor_context(
        resources={
            "registry": ModelRegistryResource(),
            "audit": AuditLogResource(),
            "storage": StorageResource(),
        }
    )
    result = defs.resolve_sensor_def(CHAMPION_SENSOR).evaluate_tick(context)
    assert result.skip_message == f"every champion alias is explained ({MODELS} models checked)"
    assert not (platform_home / "mlflow.db").exists()  # no MLflow store was created to say so
