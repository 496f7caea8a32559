"""On the Kubernetes deployment, locations that carry credentials come from the environment
(dg.EnvVar): their values never appear in run config, run tags, the event log, the run's output,
or the training run's MLflow params and tags."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.registry.client import ModelRegistry
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CANARY = "CANARY-SECRET-4b1e"
# Every variable of the Kubernetes deployment (ConfigMap, Secret, docs/kubernetes.md) that can hold
# a URL or a secret. The local engines need local paths and SQLite files, which cannot carry
# credentials: the canary sits in their directory. The MLflow UI URL and the alert webhook are
# only shown or posted to, so they carry it as a real credential does (tests/unit/test_redaction.py
# covers the builders with credentialed s3/https roots).
URL_SHAPED = {
    "MLFLOW_UI_URL": f"https://user:{CANARY}@mlflow.example:5000/?token={CANARY}",
    "ML_PLATFORM_ALERT_WEBHOOK": f"http://user:{CANARY}@127.0.0.1:9/hook?token={CANARY}",
}


@pytest.mark.slow
def test_secret_values_stay_out_of_run_config_tags_logs_and_mlflow(
    platform_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # In production these URLs hold database passwords; here the canary stands in for one.
    secret_dir = tmp_path / CANARY
    secret_dir.mkdir()
    monkeypatch.setenv("ML_PLATFORM_DEPLOYMENT", "k8s")
    monkeypatch.setenv("ML_PLATFORM_DATA_ROOT", str(platform_home / "data"))
    monkeypatch.setenv("ML_PLATFORM_ARTIFACT_ROOT", str(platform_home / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{secret_dir / 'mlflow.db'}")
    monkeypatch.setenv("ML_PLATFORM_AUDIT_URL", f"sqlite:///{secret_dir / 'audit.db'}")
    monkeypatch.setenv("ML_PLATFORM_CHECKPOINT_ROOT", str(platform_home / "checkpoints"))
    monkeypatch.setenv("ML_PLATFORM_MLFLOW_ARTIFACT_ROOT", (secret_dir / "mlartifacts").as_uri())
    monkeypatch.setenv("ML_PLATFORM_FEAST_REGISTRY", str(platform_home / "feast" / "registry.db"))
    for name, value in URL_SHAPED.items():
        monkeypatch.setenv(name, value)
    specs = loans.write_specs(tmp_path / "specs")
    loans.write_frames(PlatformSettings.from_env(), loans.good_frames())

    defs = build_definitions(PROJECT_ROOT, spec_path=str(specs))
    job = defs.resolve_job_def(f"{loans.MODEL}_training")
    assert job.executor_def.name == "k8s"
    with dg.DagsterInstance.get() as instance:
        # execute_in_process runs the steps here instead of in pods; resources and config are
        # resolved exactly as on the cluster.
        result = job.execute_in_process(instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        assert CANARY not in str(run.run_config)
        assert CANARY not in str(run.tags)
        # Every event record: its message and its metadata (materializations, checks, logs).
        for entry in instance.all_logs(result.run_id):
            assert CANARY not in str(entry), entry
        output = capfd.readouterr()
        assert CANARY not in output.out
        assert CANARY not in output.err
    registry = ModelRegistry.for_settings(PlatformSettings.from_env())
    runs = registry.client.search_runs(
        [registry.client.get_experiment_by_name(loans.MODEL).experiment_id]  # type: ignore[union-attr]
    )
    assert runs, "no MLflow training run"
    for mlflow_run in runs:
        assert CANARY not in repr(mlflow_run.data.params), mlflow_run.data.params
        assert CANARY not in repr(mlflow_run.data.tags), mlflow_run.data.tags
    for version in registry.client.search_model_versions(f"name='{loans.MODEL}'"):
        assert CANARY not in repr(version.tags), version.tags
    assert (secret_dir / "mlflow.db").exists()  # the secret location was really used
