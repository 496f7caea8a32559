"""The end of a run as people read it: verdict, step times, checks, and the model's champion."""

from __future__ import annotations

from ml_platform.cli.launch import RunOutcome
from ml_platform.cli.output import echo

SHOWN_METRICS = (
    *("roc_auc", "pr_auc", "precision", "recall", "f1", "calibration_error"),
    *("accuracy", "macro_f1", "rmse", "mae", "r2"),
)


def show_outcome(outcome: RunOutcome) -> None:
    """The run's verdict, its time per step, every check, and why it failed if it did.

    Args:
        outcome: what the run did.
    """
    verdict = "succeeded" if outcome.success else "FAILED"
    echo(
        f"\n{outcome.job_name}: {verdict} in {outcome.seconds:.1f}s (run {outcome.run_id})",
        style="bold green" if outcome.success else "bold red",
    )
    for step, seconds in outcome.steps:
        echo(f"  {step:<45} {seconds:8.1f}s")
    if outcome.checks:
        echo("  checks:")
    for check in outcome.checks:
        verdict = "passed" if check.passed else "FAILED"
        detail = f": {check.description}" if check.description else ""
        echo(
            f"    {check.asset + ' ' + check.check:<55} {verdict}{detail}",
            style="" if check.passed else "red",
        )
    if outcome.success:
        return
    for failure in outcome.failed_steps:
        echo(f"  failed step {failure}", style="red")
    for check in outcome.failed_checks:
        echo(f"  failed check {check.asset}: {check.check}: {check.description}", style="red")
    if not outcome.failed_steps and not outcome.failed_checks:
        echo("  the run failed before any step; see its event log in the Dagster UI", style="red")


def show_champion(name: str) -> None:
    """The champion, the newest evaluation's test metrics and every gate's verdict.

    Args:
        name: the model.
    """
    from ml_platform.datasets.training_set import current_training_set
    from ml_platform.lifecycle.records import current_evaluation
    from resources import ModelRegistryResource, StorageResource

    # The local deployment's resources: the same ones its runs use.
    settings = StorageResource().settings()
    champion = ModelRegistryResource().registry().champion_version(name)
    try:
        evaluation = current_evaluation(settings, name)
    except FileNotFoundError:
        echo(f"\n{name}: champion version {champion or 'none'} (no evaluation yet)")
        return
    try:
        data_gate = current_training_set(settings, name).gate or {}
    except FileNotFoundError:
        data_gate = {}
    echo(f"\n{name}: champion version {champion} (evaluated version {evaluation.version})")
    for metric in SHOWN_METRICS:
        if metric in evaluation.metrics:
            echo(f"  test {metric:<18} {evaluation.metrics[metric]:.4f}")
    echo("  gates:")
    echo(
        f"    {'data_quality (training set)':<28} "
        f"{'passed' if data_gate.get('success') else 'FAILED'}: "
        f"{data_gate.get('summary', '')}"
    )
    for gate in evaluation.gate_results():
        verdict = "passed" if gate.passed else "FAILED"
        echo(f"    {gate.name:<28} {verdict}: {gate.description}")
