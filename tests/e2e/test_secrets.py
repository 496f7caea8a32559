"""On the Kubernetes deployment, locations that carry credentials come from the environment
(dg.EnvVar): their values never appear in run config, run tags or the event log."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CANARY = "CANARY-SECRET-4b1e"


@pytest.mark.slow
def test_secret_values_stay_out_of_run_config_tags_and_logs(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In production these URLs hold database passwords; here the canary stands in for one.
    secret_dir = tmp_path / CANARY
    secret_dir.mkdir()
    monkeypatch.setenv("ML_PLATFORM_DEPLOYMENT", "k8s")
    monkeypatch.setenv("ML_PLATFORM_DATA_ROOT", str(platform_home / "data"))
    monkeypatch.setenv("ML_PLATFORM_ARTIFACT_ROOT", str(platform_home / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{secret_dir / 'mlflow.db'}")
    monkeypatch.setenv("ML_PLATFORM_AUDIT_URL", f"sqlite:///{secret_dir / 'audit.db'}")
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
        for entry in instance.all_logs(result.run_id):
            assert CANARY not in str(entry), entry
    assert (secret_dir / "mlflow.db").exists()  # the secret location was really used
