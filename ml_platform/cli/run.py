"""``ml-platform run MODEL``: launch one of the model's jobs on the instance, as the UI would."""

from __future__ import annotations

from pathlib import Path

from ml_platform.cli.common import model_names, prepare_environment
from ml_platform.cli.launch import LaunchError, open_launcher
from ml_platform.cli.output import echo
from ml_platform.cli.summary import show_champion, show_outcome

JOBS = ("training", "scoring", "monitoring")


def job_name(model: str, job: str) -> str:
    """The Dagster job of ``model`` that ``--job`` names.

    Args:
        model: the model.
        job: ``training``, ``scoring`` or ``monitoring``.

    Returns:
        The job name, e.g. ``loan_default_training``.
    """
    from assets.keys import monitoring_job_name, scoring_job_name, training_job_name

    names = {
        "training": training_job_name,
        "scoring": scoring_job_name,
        "monitoring": monitoring_job_name,
    }
    return names[job](model)


def run_model(model: str, job: str = "training", workspace: Path | None = None) -> int:
    """Launch the model's job on the Dagster instance; show its progress, checks and champion.

    Args:
        model: the model (spec) name.
        job: ``training``, ``scoring`` or ``monitoring``.
        workspace: the workspace file whose code location runs the job (default
            ``./workspace.yaml``).

    Returns:
        The exit status: 0 when the run succeeded, 1 when it failed, 2 on a bad argument.
    """
    import dagster as dg

    prepare_environment()
    if model_names([model]) is None:
        return 2
    instance = dg.DagsterInstance.get()
    try:
        with open_launcher(instance, workspace) as launcher:
            outcome = launcher.launch(job_name(model, job))
    except LaunchError as error:
        echo(str(error), err=True)
        return 2
    show_outcome(outcome)
    if job == "training":
        show_champion(model)
    echo(f"\nSee run {outcome.run_id} in the Dagster UI (make dev): Runs, or the job's page")
    return 0 if outcome.success else 1
