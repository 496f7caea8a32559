"""``ml-platform demo``: the example end to end, its runs launched on the instance (seen in the UI).

``--drift`` trains on undrifted payments, scores drifted ones, reports drift and lets the drift
sensor ask for the retraining, which then runs through the gates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ml_platform.cli.common import model_names, passive_thread_waits, prepare_environment
from ml_platform.cli.launch import (
    Launcher,
    LaunchError,
    open_launcher,
)
from ml_platform.cli.output import echo
from ml_platform.cli.summary import show_champion, show_outcome

if TYPE_CHECKING:
    from dagster import DagsterInstance, Definitions
    from dagster._core.definitions.sensor_definition import SensorExecutionData

DRIFT_START_ENV = "ML_PLATFORM_DEMO_DRIFT_START"
DEMO_DRIFT_START = "2026-03-15"
"""Where the drift demo's payments start to drift: the last 3.5 months of the example's period,
so the scored window is drifted and a retraining has drifted rows in its training split."""
SEE_THE_UI = "\nSee the runs in the Dagster UI: make dev   |   MLflow UI: make mlflow"


def _launch(launcher: Launcher, job_name: str, tags: dict[str, str] | None = None) -> bool:
    outcome = launcher.launch(job_name, tags)
    show_outcome(outcome)
    return outcome.success


def demo(models: list[str] | None, rows: int | None, workspace: Path | None = None) -> int:
    """Run every model's training and scoring jobs on the instance and show the champions.

    Args:
        models: the models to run (default: all).
        rows: rows of generated payments, if not the spec's default.
        workspace: the workspace file whose code location runs the jobs.

    Returns:
        The exit status: 1 when a model's run failed, 2 on a bad argument.
    """
    import dagster as dg

    from assets.keys import scoring_job_name, training_job_name

    home = prepare_environment(rows)
    passive_thread_waits()
    names = model_names(models)
    if names is None:
        return 2
    echo(f"ML_PLATFORM_HOME={home}  DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    status = 0  # the exit code: 1 when any model failed
    try:
        with open_launcher(dg.DagsterInstance.get(), workspace) as launcher:
            for name in names:
                jobs = (training_job_name(name), scoring_job_name(name))
                if not all(_launch(launcher, job) for job in jobs):
                    status = 1
                    echo(f"\n{name}: not promoted; see the failed run in the Dagster UI (make dev)")
                    continue
                show_champion(name)
    except LaunchError as error:
        echo(str(error), err=True)
        return 2
    echo(peak_memory_line())
    echo(SEE_THE_UI)
    return status


def peak_memory_line() -> str:
    """The peak resident memory of this process, which runs every step, and of its children.

    Children (the code server) count once they have exited. A child forked from this process
    counts the pages it shares with it until it execs, so the children's figure is an upper bound.

    Returns:
        A line such as ``peak memory: 5.21 GiB (demo process, every step), children at most ...``.
    """
    import resource

    gib = 2**20  # ru_maxrss is in KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / gib
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / gib
    return (
        f"peak memory: {own:.2f} GiB (demo process, every step), "
        f"children at most {children:.2f} GiB each"
    )


def demo_drift(models: list[str] | None, rows: int | None, workspace: Path | None = None) -> int:
    """Train on undrifted payments, score drifted ones, report drift, let the sensor retrain.

    Args:
        models: the models to run (default: all).
        rows: rows of generated payments, if not the spec's default.
        workspace: the workspace file whose code location runs the jobs.

    Returns:
        The exit status: 1 when a run failed or the sensor asked for no retraining.
    """
    import dagster as dg

    home = prepare_environment(rows)
    passive_thread_waits()
    names = model_names(models)
    if names is None:
        return 2
    echo(f"ML_PLATFORM_HOME={home}  DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    try:
        with open_launcher(dg.DagsterInstance.get(), workspace) as launcher:
            status = _drift_story(launcher, names)
    except LaunchError as error:
        echo(str(error), err=True)
        return 2
    echo(SEE_THE_UI)
    return status


def _drift_story(launcher: Launcher, names: list[str]) -> int:
    """The drift demo's four acts; runs execute here, so the generator sees the drift variable."""
    from assets.keys import monitoring_job_name, training_job_name
    from ml_platform.definitions import build_definitions

    os.environ.pop(DRIFT_START_ENV, None)
    undrifted = build_definitions(Path.cwd())
    echo("\n== 1. Train on undrifted data, score its newest window and report drift")
    cursors: dict[str, str | None] = {}
    for name in names:
        for job in (training_job_name(name), monitoring_job_name(name)):
            if not _launch(launcher, job):
                return 1
        _show_drift_report(name)
        cursors[name] = _sensor_tick(undrifted, launcher.instance, name, None).cursor
    os.environ[DRIFT_START_ENV] = DEMO_DRIFT_START
    drifted = build_definitions(Path.cwd())
    echo(f"\n== 2. New data, drifted from {DEMO_DRIFT_START}: score, report, ask the sensor")
    if not _generate_sources(launcher):
        return 1
    status = 0
    for name in names:
        status = max(status, _retrain_on_drift(drifted, launcher, name, cursors[name]))
    return status


def _generate_sources(launcher: Launcher) -> bool:
    """Materialize every generated source (the new data), as the sources' own asset does."""
    from assets.keys import source_key
    from ml_platform.cli.common import catalog_with

    catalog = catalog_with([])
    keys = [
        source_key(source.name)
        for repo in catalog.feature_repos.values()
        if repo.generator is not None
        for source in repo.sources
    ]
    outcome = launcher.launch("__ASSET_JOB", asset_selection=keys)
    echo(f"\ngenerated sources: {'succeeded' if outcome.success else 'FAILED'}")
    return outcome.success


def _retrain_on_drift(
    definitions: Definitions, launcher: Launcher, name: str, cursor: str | None
) -> int:
    """Score and report the drifted window, evaluate the sensor, run the retraining it asks for.

    Returns:
        The exit status: 1 when a run failed or the sensor asked for no retraining.
    """
    from assets.keys import drift_sensor_name, monitoring_job_name, training_job_name
    from resources import ModelRegistryResource

    if not _launch(launcher, monitoring_job_name(name)):
        return 1
    _show_drift_report(name)
    tick = _sensor_tick(definitions, launcher.instance, name, cursor)
    if not tick.run_requests:
        echo(f"\n{name}: the drift sensor requested no retraining")
        return 1
    request = tick.run_requests[0]
    echo(f"\n== 3. The retraining the sensor requested (run key {request.run_key}), gated")
    registry = ModelRegistryResource().registry()
    before = registry.champion_version(name)
    # The daemon's own tags: a daemon that later evaluates the sensor finds this run by its key.
    tags = {
        **request.tags,
        "dagster/run_key": request.run_key or "",
        "dagster/sensor_name": drift_sensor_name(name),
    }
    succeeded = _launch(launcher, training_job_name(name), tags)
    show_champion(name)
    after = registry.champion_version(name)
    if after != before:
        echo(f"  promoted: the retrained version {after} replaces version {before}")
    else:
        echo(f"  not promoted: version {before} stays champion")
    echo("\n== 4. The sensor again: the same drift event never retrains twice")
    _sensor_tick(definitions, launcher.instance, name, tick.cursor)
    return 0 if succeeded else 1


def _show_drift_report(name: str) -> None:
    """The current drift report: verdict, drifted features, prediction and performance drift."""
    from ml_platform.lifecycle.records import current_drift_report
    from resources import StorageResource

    report = current_drift_report(StorageResource().settings(), name)
    echo(
        f"\n{name}/drift_report {report.report_id} (champion v{report.model_version}, "
        f"{report.rows} rows): {report.status}, drift share {report.drift_share:.2f} "
        f"(threshold {report.drift_share_threshold:.2f})"
    )
    for feature in report.drifted_features:
        score = report.feature_scores.get(feature)
        echo(f"  drifted: {feature:<28} score {'n/a' if score is None else f'{score:.4f}'}")
    echo(f"  prediction drift: {report.prediction_drift}")
    if report.performance is not None:
        performance = report.performance
        values = ", ".join(
            f"{label} {value:.4f}"
            for label, value in (
                ("current", performance.current),
                ("at evaluation", performance.reference),
            )
            if value is not None
        )
        echo(
            f"  performance ({performance.metric}, {performance.rows} labelled rows): "
            f"{performance.status} ({values or performance.reason})"
        )
    echo(f"  retrain_on fired: {', '.join(report.retrain_reasons) or 'nothing'}")
    if report.html_path:
        echo(f"  Evidently report: {report.html_path}")


def _sensor_tick(
    definitions: Definitions, instance: DagsterInstance, name: str, cursor: str | None
) -> SensorExecutionData:
    """Evaluate the model's drift sensor once, as the daemon would, and show its decision."""
    import dagster as dg

    from assets.keys import drift_sensor_name

    sensor = definitions.resolve_sensor_def(drift_sensor_name(name))
    # build_sensor_context takes the sensor's resources from `resources`, not `definitions`.
    resources = {key: (definitions.resources or {})[key] for key in sensor.required_resource_keys}
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=definitions, resources=resources
    ) as context:
        tick = sensor.evaluate_tick(context)
    for request in tick.run_requests or []:
        echo(f"  {sensor.name}: RunRequest {request.run_key} for {sensor.job_name}")
    if not tick.run_requests:
        echo(f"  {sensor.name}: skipped: {tick.skip_message}")
    return tick
