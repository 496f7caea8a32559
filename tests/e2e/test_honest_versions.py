"""One model version per distinct inputs, on a real Dagster instance and a real MLflow backend.

A second materialization of the model on the same data snapshot, parameters and code registers
nothing: it points the model at the version already trained and its evaluation evaluates that
version. A forced one (run tag ``ml_platform/force_retrain``) registers a new version, which is
``pending`` until evaluated. Training reports each epoch (losses, the validation primary metric,
throughput, ETA) to the step log and MLflow, and leaves a learning curve beside the record and in
the MLflow run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import build_training_set
from ml_platform.definitions import build_definitions
from ml_platform.features.store import apply_feature_repo
from ml_platform.lifecycle.records import (
    TAG_EVALUATION,
    StepContext,
    current_evaluation,
    current_model,
    reused_by_run_tag,
)
from ml_platform.lifecycle.reference import load_reference
from ml_platform.lifecycle.train import train_model
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import TAG_DAGSTER_RUN
from ml_platform.spec.loading import load_project
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3
FORCE_RETRAIN_TAG = "ml_platform/force_retrain"
MODEL_KEY = dg.AssetKey([loans.MODEL, "model"])
EVALUATION_KEY = dg.AssetKey([loans.MODEL, "evaluation"])
PNG = b"\x89PNG\r\n\x1a\n"
RUN_A = "0a1b2c3d-0000-4000-8000-00000000000a"
RUN_B = "0a1b2c3d-0000-4000-8000-00000000000b"
RUN_C = "0a1b2c3d-0000-4000-8000-00000000000c"


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [record.user_message for record in instance.all_logs(run_id)]


@pytest.mark.slow
def test_unchanged_inputs_reuse_the_version_and_a_forced_run_trains_a_new_one(
    platform_home: Path, tmp_path: Path
) -> None:
    specs = loans.write_specs(
        tmp_path / "specs",
        training={"epochs": EPOCHS, "batch_size": 256, "learning_rate": 0.01},
    )
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    defs = build_definitions(PROJECT_ROOT, spec_path=str(specs))
    training = defs.resolve_job_def(f"{loans.MODEL}_training")
    registry = ModelRegistry.for_settings(settings)

    with dg.DagsterInstance.ephemeral() as instance:
        first = training.execute_in_process(instance=instance)
        assert first.success
        assert registry.registered_versions(loans.MODEL) == ["1"]
        tags = registry.version_tags(loans.MODEL, "1")
        assert tags[TAG_EVALUATION] in ("passed", "failed")

        # Progress: one step-log line per epoch with the primary metric, throughput and ETA.
        lines = _messages(instance, first.run_id)
        epochs = [line for line in lines if line.startswith("epoch ") and "ETA " in line]
        assert [line.split(":")[0] for line in epochs] == [
            f"epoch {epoch}/{EPOCHS}" for epoch in range(1, EPOCHS + 1)
        ]
        assert all("val_roc_auc=" in line and " rows/s" in line for line in epochs)
        # ... and to MLflow as it goes: val_<primary metric> at every epoch.
        run_id = current_model(settings, loans.MODEL).mlflow_run_id
        curve = registry.client.get_metric_history(run_id, "val_roc_auc")
        assert sorted(metric.step for metric in curve) == list(range(1, EPOCHS + 1))
        # The learning curve: beside the record, and in the training run.
        record = current_model(settings, loans.MODEL)
        assert Path(record.plots["learning_curve"]).read_bytes()[:8] == PNG
        logged = {a.path for a in registry.client.list_artifacts(run_id, "evaluation/plots")}
        assert "evaluation/plots/learning_curve.png" in logged

        # The same inputs again: nothing is trained, and this run evaluates version 1.
        second = training.execute_in_process(instance=instance)
        assert second.success
        assert registry.registered_versions(loans.MODEL) == ["1"]
        assert f"unchanged inputs: reusing version 1 (trained by run {first.run_id})" in _messages(
            instance, second.run_id
        )
        assert registry.version_tags(loans.MODEL, "1")[reused_by_run_tag(second.run_id)]
        reused = current_model(settings, loans.MODEL)
        assert (reused.version, reused.reused_by_run) == ("1", second.run_id)
        assert reused.trained_by_run == first.run_id
        assert current_evaluation(settings, loans.MODEL).version == "1"
        assert [
            e.dagster_run_id for e in AuditLog(settings.audit_url).events(loans.MODEL, "reused")
        ] == [second.run_id]

        # Forced: a new version, pending until its evaluation gives a verdict.
        forced = training.execute_in_process(
            instance=instance, tags={FORCE_RETRAIN_TAG: "true"}, asset_selection=[MODEL_KEY]
        )
        assert forced.success
        assert registry.registered_versions(loans.MODEL) == ["1", "2"]
        assert registry.version_tags(loans.MODEL, "2")[TAG_DAGSTER_RUN] == forced.run_id
        assert registry.version_tags(loans.MODEL, "2")[TAG_EVALUATION] == "pending"
        assert current_model(settings, loans.MODEL).evaluation == "pending"
        shown = instance.get_latest_materialization_event(MODEL_KEY)
        assert shown is not None and shown.asset_materialization is not None
        assert shown.asset_materialization.metadata["evaluation"].value == "pending"

        evaluated = training.execute_in_process(instance=instance, asset_selection=[EVALUATION_KEY])
        assert evaluated.success
    assert registry.version_tags(loans.MODEL, "2")[TAG_EVALUATION] in ("passed", "failed")
    assert current_evaluation(settings, loans.MODEL).version == "2"


@pytest.mark.slow
def test_a_run_stopped_after_registration_is_completed_not_retrained_and_code_counts(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = loans.write_specs(
        tmp_path / "specs", model={"flavor": "xgboost", "params": {"n_estimators": 10}}
    )
    catalog = load_project(PROJECT_ROOT, str(specs))
    spec, resolved = catalog.models[loans.MODEL], catalog.resolved[loans.MODEL]
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    apply_feature_repo(catalog.feature_repos["lending"], settings)
    assert build_training_set(spec, resolved, catalog, settings)[1].success
    registry = ModelRegistry.for_settings(settings)
    stopped = StepContext(settings, registry, AuditLog(settings.audit_url), dagster_run_id=RUN_A)
    monkeypatch.setenv("ML_PLATFORM_CODE_VERSION", "release-1")

    # Run A stops right after registering version 1, before its drift reference is stored.
    original = MlflowClient.log_artifact

    def stop_after_registration(self: MlflowClient, *args: object, **kwargs: object) -> object:
        if registry.registered_versions(loans.MODEL):
            raise MlflowException("run A was stopped here", TEMPORARILY_UNAVAILABLE)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MlflowClient, "log_artifact", stop_after_registration)
    with pytest.raises(MlflowException, match="run A was stopped"):
        train_model(spec, resolved, stopped)
    monkeypatch.setattr(MlflowClient, "log_artifact", original)
    assert registry.registered_versions(loans.MODEL) == ["1"]

    # Run B (a re-execution: another Dagster run) completes version 1 instead of training.
    step = replace(stopped, dagster_run_id=RUN_B)
    record = train_model(spec, resolved, step)
    assert (record.version, record.trained_by_run, record.reused_by_run) == ("1", RUN_A, RUN_B)
    assert load_reference(settings, registry, loans.MODEL, "1").sample.shape[0] > 0
    assert registry.client.get_run(record.mlflow_run_id).info.status == "FINISHED"

    # Other code is another training; forced, the same inputs are trained again.
    monkeypatch.setenv("ML_PLATFORM_CODE_VERSION", "release-2")
    assert train_model(spec, resolved, step).version == "2"
    forced = replace(step, dagster_run_id=RUN_C)
    assert train_model(spec, resolved, forced, force=True).version == "3"
    assert registry.registered_versions(loans.MODEL) == ["1", "2", "3"]
    assert [e.model_version for e in step.audit.events(loans.MODEL, "reused")] == ["1"]
