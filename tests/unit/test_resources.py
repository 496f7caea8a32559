"""The typed resources: defaults per deployment, and the Dagster run's MLflow run (dagster-mlflow)
on a real SQLite MLflow backend."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from assets.keys import MODEL_TAG
from ml_platform.core.settings import PlatformSettings
from ml_platform.registry.tags import TAG_DAGSTER_RUN
from resources import (
    AuditLogResource,
    FeatureStoreResource,
    ModelRegistryResource,
    StorageResource,
    resources_for_deployment,
)
from resources.mlflow_tracking import DEFAULT_EXPERIMENT, MlflowTrackingResource

TYPED_KEYS = {"storage", "registry", "feature_store", "audit", "mlflow", "lifecycle"}


def test_local_resources_take_the_defaults_under_the_home(platform_home: Path) -> None:
    resources = resources_for_deployment()
    assert set(resources) == TYPED_KEYS
    settings = resources["storage"].settings()  # type: ignore[attr-defined]
    assert settings == PlatformSettings.from_env()
    assert settings.data_root == str(platform_home / "data")
    registry = resources["registry"].registry()  # type: ignore[attr-defined]
    assert registry.tracking_uri == f"sqlite:///{platform_home / 'mlflow.db'}"
    assert registry.model_registry_uri == registry.tracking_uri
    audit = resources["audit"].audit_log()  # type: ignore[attr-defined]
    assert audit.url == f"sqlite:///{platform_home / 'audit.db'}"
    # The model assets' resource bundles the same four engines.
    lifecycle = resources["lifecycle"]
    for key in ("storage", "registry", "feature_store", "audit"):
        assert getattr(lifecycle, key) == resources[key]


def test_k8s_resources_read_every_required_location_from_the_environment(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_PLATFORM_DEPLOYMENT", "k8s")
    resources = resources_for_deployment()
    assert set(resources) == TYPED_KEYS
    env_vars = {
        (key, name): value
        for key, resource in resources.items()
        for name, value in resource.__dict__.items()
        if isinstance(value, dg.EnvVar)
    }
    assert env_vars == {
        ("storage", "data_root"): "ML_PLATFORM_DATA_ROOT",
        ("storage", "artifact_root"): "ML_PLATFORM_ARTIFACT_ROOT",
        ("registry", "tracking_uri"): "MLFLOW_TRACKING_URI",
        ("audit", "url"): "ML_PLATFORM_AUDIT_URL",
        ("mlflow", "mlflow_tracking_uri"): "MLFLOW_TRACKING_URI",
    }


def test_explicit_fields_win_over_the_defaults(platform_home: Path, tmp_path: Path) -> None:
    storage = StorageResource(data_root=str(tmp_path / "d"), checkpoint_root=str(tmp_path / "c"))
    settings = storage.settings()
    assert (settings.data_root, settings.checkpoint_root) == (
        str(tmp_path / "d"),
        str(tmp_path / "c"),
    )
    assert settings.artifact_root == str(platform_home / "artifacts")
    feast = FeatureStoreResource(
        project="other", online_store_path=str(tmp_path / "online.db")
    ).settings(storage)
    assert feast.feast_project == "other"
    assert feast.feast_online_store == {"type": "sqlite", "path": str(tmp_path / "online.db")}
    assert feast.data_root == settings.data_root
    assert AuditLogResource(url=f"sqlite:///{tmp_path / 'a.db'}").audit_log().url.endswith("a.db")
    registry = ModelRegistryResource(tracking_uri="http://mlflow:5000", ui_url="http://ui")
    assert registry.registry().run_url("1", "abc") == "http://ui/#/experiments/1/runs/abc"


def _mlflow_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


def test_training_runs_nest_under_the_dagster_runs_mlflow_run(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    monkeypatch.chdir(platform_home)  # stray ./mlruns files would land here
    environment = _mlflow_environment()
    seen: dict[str, str | None] = {}

    @dg.asset
    def trained(mlflow_run: MlflowTrackingResource, registry: ModelRegistryResource) -> None:
        seen["parent"] = mlflow_run.parent_run_id
        assert mlflow.active_run() is None  # MlFlow's fluent run does not leak
        assert _mlflow_environment() == environment
        backend = registry.registry()
        tags = {TAG_DAGSTER_RUN: "x", MLFLOW_PARENT_RUN_ID: mlflow_run.parent_run_id or ""}
        with backend.start_training_run("credit", {"flavor": "torch"}, tags) as run:
            seen["child"] = run.run_id
            # What log_model_version does: fluent start_run on the training run still works.
            with backend.fluent(), mlflow.start_run(run_id=run.run_id):
                mlflow.log_param("fluent", "ok")

    result = dg.materialize(
        [trained],
        resources={"mlflow_run": MlflowTrackingResource(), "registry": ModelRegistryResource()},
        tags={MODEL_TAG: "credit"},
    )
    assert result.success
    assert _mlflow_environment() == environment
    client = ModelRegistryResource().registry().client
    parent = client.get_run(seen["parent"] or "")
    child = client.get_run(seen["child"] or "")
    assert child.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id
    assert child.data.params == {"flavor": "torch", "fluent": "ok"}
    assert parent.info.experiment_id == child.info.experiment_id  # the model's experiment
    assert parent.data.tags[TAG_DAGSTER_RUN] == result.run_id
    assert parent.info.run_name == "__ephemeral_asset_job__"
    assert parent.info.status == "FINISHED"  # ended with the Dagster run


def test_a_later_step_resumes_the_run_and_a_failed_step_fails_it(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(platform_home)
    dagster_run = SimpleNamespace(run_id="run-1234", job_name="nightly", tags={})
    failed = SimpleNamespace(records=[object()])
    instance = SimpleNamespace(get_records_for_run=lambda *args, **kwargs: failed)
    context = SimpleNamespace(
        run=dagster_run,
        log=logging.getLogger("test"),
        instance=instance,
    )
    first, second = MlflowTrackingResource(), MlflowTrackingResource()
    first.setup_for_execution(context)  # type: ignore[arg-type]
    run_id = first.parent_run_id
    first.teardown_after_execution(context)  # type: ignore[arg-type]
    second.setup_for_execution(context)  # type: ignore[arg-type]  # the next step's process
    assert second.parent_run_id == run_id
    client = second.registry().client
    run = client.get_run(run_id or "")
    assert run.info.status == "RUNNING"
    assert client.get_experiment(run.info.experiment_id).name == DEFAULT_EXPERIMENT
    second.teardown_after_execution(context)  # type: ignore[arg-type]
    assert client.get_run(run_id or "").info.status == "FAILED"


def test_outside_a_run_the_resource_starts_nothing(platform_home: Path) -> None:
    resource = MlflowTrackingResource()
    resource.setup_for_execution(dg.build_init_resource_context())
    assert resource.parent_run_id is None


def test_the_online_store_is_sqlite_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_platform.core.settings import FEAST_ONLINE_STORE_ENV, PlatformSettings

    monkeypatch.delenv(FEAST_ONLINE_STORE_ENV, raising=False)
    local = PlatformSettings.from_env(home=tmp_path).feast_online_store
    assert local == {"type": "sqlite", "path": str(tmp_path / "feast" / "online.db")}
    redis = {"type": "redis", "connection_string": "redis:6379,password=s3cret"}
    monkeypatch.setenv(FEAST_ONLINE_STORE_ENV, json.dumps(redis))
    assert PlatformSettings.from_env(home=tmp_path).feast_online_store == redis
    monkeypatch.setenv(FEAST_ONLINE_STORE_ENV, "redis:6379,password=s3cret")
    with pytest.raises(ValueError, match=FEAST_ONLINE_STORE_ENV) as refused:
        PlatformSettings.from_env(home=tmp_path)
    assert "s3cret" not in str(refused.value)


def test_the_journal_mode_is_interval_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from ml_platform.serving.server import JOURNAL_FSYNC_ENV, journal_fsync

    monkeypatch.delenv(JOURNAL_FSYNC_ENV, raising=False)
    assert journal_fsync() == "interval"
    monkeypatch.setenv(JOURNAL_FSYNC_ENV, "Always")
    assert journal_fsync() == "always"
    monkeypatch.setenv(JOURNAL_FSYNC_ENV, "sometimes")
    with pytest.raises(ValueError, match="'interval' or 'always'"):
        journal_fsync()
