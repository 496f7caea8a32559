"""``ml-platform status [MODEL]``: where each model stands, from the instance, records and MLflow.

Per model: the champion version and its primary metric (MLflow), the last training run (the
Dagster instance), the gate results of the newest evaluation and the last drift verdict (the
records under the artifact root).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ml_platform.cli.common import catalog_with, model_names, prepare_environment
from ml_platform.cli.output import echo
from ml_platform.core.settings import PlatformSettings

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from ml_platform.registry.client import ModelRegistry

# A status is a quick look: a failing MLflow server fails fast instead of retrying for minutes.
MLFLOW_FAST_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def status(models: list[str] | None) -> int:
    """Show each model's champion, last training run, newest gate results and drift verdict.

    Args:
        models: the models to show (default: all the project declares).

    Returns:
        The exit status: 0, 1 when MLflow could not be read, 2 for an unknown model.
    """
    import dagster as dg

    from resources import ModelRegistryResource, StorageResource

    prepare_environment()
    for name, value in MLFLOW_FAST_FAILURE.items():
        os.environ.setdefault(name, value)
    names = model_names(models)
    if names is None:
        return 2
    catalog = catalog_with([])
    settings = StorageResource().settings()
    registry = ModelRegistryResource().registry()
    instance = dg.DagsterInstance.get()
    exit_status = 0
    for name in names:
        echo(f"\n{name}", style="bold")
        if not _champion(registry, name, catalog.models[name].primary_metric):
            exit_status = 1
        _last_training(instance, name)
        _evaluation(settings, name)
        _drift(settings, name)
    return exit_status


def _champion(registry: ModelRegistry, name: str, primary_metric: str) -> bool:
    """Show the champion and its primary metric; False when MLflow could not be read."""
    from ml_platform.core.helpers import redact_url

    uri = registry.model_registry_uri
    where = redact_url(uri)
    problem = _unreachable(uri)
    if problem is None and _never_created(uri):
        echo(f"  champion       no champion yet (train one: ml-platform run {name})")
        return True
    try:
        if problem is not None:
            raise ConnectionError(problem)
        champion = registry.champion_version(name)
        value = (
            None if champion is None else registry.version_metric(name, champion, primary_metric)
        )
    except Exception as error:  # any MLflow or connection failure is shown, not raised
        lines = str(error).replace(uri, where).strip().splitlines()
        echo(
            f"  champion       unknown: MLflow at {where} is unreachable "
            f"({lines[0] if lines else type(error).__name__})",
            err=True,
        )
        return False
    if champion is None:
        echo(f"  champion       no champion yet (train one: ml-platform run {name})")
        return True
    shown = "not evaluated" if value is None else f"{value:.4f}"
    echo(f"  champion       version {champion}, test {primary_metric} {shown}")
    return True


def _unreachable(uri: str) -> str | None:
    """Why an HTTP(S) tracking server cannot be reached (a TCP connect), None if it can be.

    MLflow's client imports much and retries for minutes before it gives up; a status answers in
    seconds.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=5):
            return None
    except OSError as error:
        return f"cannot connect to {parts.hostname}:{port}: {error.strerror or error}"


def _never_created(uri: str) -> bool:
    """A local SQLite registry whose file does not exist yet: nothing was ever registered."""
    prefix = "sqlite:///"
    return uri.startswith(prefix) and not Path(uri.removeprefix(prefix)).exists()


def _last_training(instance: DagsterInstance, name: str) -> None:
    import dagster as dg

    from assets.keys import training_job_name

    records = instance.get_run_records(
        dg.RunsFilter(job_name=training_job_name(name)), limit=1, ascending=False
    )
    if not records:
        echo("  last training  no training run yet")
        return
    record = records[0]
    started = record.start_time or record.create_timestamp.timestamp()
    when = datetime.fromtimestamp(started, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    run = record.dagster_run
    echo(f"  last training  run {run.run_id} {run.status.value} at {when} ({run.job_name})")


def _evaluation(settings: PlatformSettings, name: str) -> None:
    from ml_platform.lifecycle.records import current_evaluation

    try:
        evaluation = current_evaluation(settings, name)
    except FileNotFoundError:
        echo("  gates          no evaluation yet")
        return
    echo(
        f"  gates          of the evaluation of version {evaluation.version} "
        f"(test {evaluation.primary_metric} "
        f"{evaluation.metrics.get(evaluation.primary_metric, float('nan')):.4f})"
    )
    data_gate = _data_gate(settings, name)
    if data_gate is not None:
        verdict = "passed" if data_gate.get("success") else "FAILED"
        echo(f"    {'data_quality (training set)':<28} {verdict}: {data_gate.get('summary', '')}")
    for gate in evaluation.gate_results():
        verdict = "passed" if gate.passed else "FAILED"
        echo(
            f"    {gate.name:<28} {verdict}: {gate.description}",
            style="" if gate.passed else "red",
        )


def _data_gate(settings: PlatformSettings, name: str) -> dict | None:
    """The data gate's verdict on the newest training set, None when there is none."""
    from ml_platform.datasets.training_set import current_training_set

    try:
        return current_training_set(settings, name).gate or None
    except FileNotFoundError:
        return None


def _drift(settings: PlatformSettings, name: str) -> None:
    from ml_platform.lifecycle.records import current_drift_report

    try:
        report = current_drift_report(settings, name)
    except FileNotFoundError:
        echo("  drift          no drift report yet")
        return
    drifted = f"; drifted: {', '.join(report.drifted_features)}" if report.drifted_features else ""
    echo(
        f"  drift          {report.status} at {report.created_at} (version "
        f"{report.model_version}, {report.rows} rows, drift share {report.drift_share:.2f} of "
        f"{report.drift_share_threshold:.2f}){drifted}"
    )
