"""`ml-platform run`, `status` and `demo` on a real instance: runs as the Dagster UI lists them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.workspace.load import location_origins_from_yaml_paths

from assets.keys import training_job_name
from ml_platform.cli.main import main
from ml_platform.core.settings import PlatformSettings
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_LOCATION = "ml_platform.definitions"
# The UI lists a job's runs by this tag: the repository and code location of the run's origin.
UI_REPOSITORY_LABEL = f"__repository__@{WORKSPACE_LOCATION}"


def _ui_runs(job_name: str) -> list[dg.DagsterRun]:
    """The runs the Dagster UI shows on the job's page of the workspace's code location."""
    instance = dg.DagsterInstance.get()
    return list(
        instance.get_runs(
            dg.RunsFilter(job_name=job_name, tags={REPOSITORY_LABEL_TAG: UI_REPOSITORY_LABEL})
        )
    )


@pytest.mark.slow
def test_run_trains_as_the_workspace_code_location_and_status_shows_the_outcome(
    loans_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loans.write_frames(PlatformSettings.from_env(), loans.good_frames())
    assert main(["run", loans.MODEL]) == 0
    output = capsys.readouterr().out
    (run,) = _ui_runs(training_job_name(loans.MODEL))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    # The run's origin is the code location `dagster dev` loads from workspace.yaml.
    (workspace_origin,) = location_origins_from_yaml_paths([str(PROJECT_ROOT / "workspace.yaml")])
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.repository_origin.code_location_origin == workspace_origin
    assert run.remote_job_origin.location_name == WORKSPACE_LOCATION
    assert run.job_code_origin is not None  # so the UI can re-execute it
    # Progress as it happened, then the checks and the champion.
    assert "started  loan_default__model" in output
    assert "done     loan_default__model" in output
    assert "check    loan_default/evaluation: no_regression_vs_champion passed" in output
    assert "loan_default_training: succeeded in" in output and run.run_id in output
    assert "loan_default: champion version 1 (evaluated version 1)" in output

    assert main(["status", loans.MODEL]) == 0
    status = capsys.readouterr().out
    assert "champion       version 1, test roc_auc " in status
    assert f"last training  run {run.run_id} SUCCESS at " in status
    assert "data_quality (training set)  passed" in status
    assert "no_regression_vs_champion    passed" in status
    assert "drift          no drift report yet" in status


@pytest.mark.slow
def test_demo_launches_on_the_instance_and_names_the_failed_check(
    loans_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loans.write_frames(PlatformSettings.from_env(), loans.bad_frames("single_class"))
    assert main(["demo", "--model", loans.MODEL]) == 1
    output = capsys.readouterr().out
    (run,) = _ui_runs(training_job_name(loans.MODEL))
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert "loan_default_training: FAILED in" in output
    assert "failed step loan_default__training_set" in output
    assert "failed check loan_default/training_set: data_quality: " in output
    assert "loan_default: not promoted" in output
