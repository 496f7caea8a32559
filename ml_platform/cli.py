"""The ``ml-platform`` command: ``demo`` (``--drift``), ``validate``, ``init``, ``drift-alert``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ml_platform.core.settings import HOME_ENV, platform_home
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.errors import SpecError
from ml_platform.spec.loading import NAME_PATTERN, discover_spec_files, load_catalog

if TYPE_CHECKING:
    from dagster import DagsterInstance, Definitions
    from dagster._core.definitions.sensor_definition import SensorExecutionData

DEMO_ROWS_ENV = "ML_PLATFORM_DEMO_ROWS"
DRIFT_START_ENV = "ML_PLATFORM_DEMO_DRIFT_START"
DEMO_DRIFT_START = "2026-03-15"
"""Where the drift demo's payments start to drift: the last 3.5 months of the example's period,
so the scored window is drifted and a retraining has drifted rows in its training split."""
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
DEMO_METRICS = (
    *("roc_auc", "pr_auc", "precision", "recall", "f1", "calibration_error"),
    *("accuracy", "macro_f1", "rmse", "mae", "r2"),
)

INIT_TEMPLATE = """\
# Model spec for '{name}'. Validate with: ml-platform validate {path}
kind: model
name: {name}
owner: {owner}
description: What this model predicts and who uses it.
task: binary_classification          # or multiclass_classification, regression

features:
  service: {service}                 # a Feast feature service, or list views below
  # views: [some_view, other_view:one_feature]
  # request: [amount]                # columns of the label source used directly
  # categorical: []

label:
  source: {source}                   # a source declared in a 'kind: features' file
  column: {label}
  # available_at_column: label_timestamp

# Everything below is optional; these are the defaults.
split: {{validation_fraction: 0.15, test_fraction: 0.15}}
model: {{architecture: mlp, params: {{hidden_sizes: [256, 256], dropout: 0.0}}}}
training: {{epochs: 20, batch_size: 4096, learning_rate: 0.001, early_stopping_patience: 3}}
compute: {{profile: cpu-small}}
evaluation: {{threshold: 0.5, slices: []}}
retraining: {{schedule: "0 3 * * 1"}}
"""


def _catalog_with(paths: list[Path]) -> Catalog:
    files = discover_spec_files(Path.cwd())
    for path in paths:
        files += sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
    return load_catalog(list(dict.fromkeys(p.resolve() for p in files)))


def validate(paths: list[Path]) -> int:
    """Check spec files (with the project's feature repos); print precise errors."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"no such file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    catalog = _catalog_with(paths)
    wanted = {p.resolve() for p in paths}

    def selected(path: Path) -> bool:
        return any(path == w or w in path.parents for w in wanted)

    errors = [e for e in catalog.errors if selected(Path(e.path))]
    for error in errors:
        print(error, file=sys.stderr)
    valid = [n for n, p in catalog.paths.items() if selected(p)]
    for name in valid:
        kind = "model" if name in catalog.models else "feature repo"
        print(f"ok: {kind} '{name}' ({catalog.paths[name]})")
    if not errors and not valid:
        print("no spec found (a spec is a YAML file with 'kind: model' or 'kind: features')")
        return 1
    return 1 if errors else 0


def init(name: str, directory: Path, owner: str) -> int:
    """Scaffold ``<directory>/<name>/model.yaml`` from the project's feature repos."""
    import re

    if not re.match(NAME_PATTERN, name):
        print(f"'{name}' is not a valid model name: use letters, digits and _", file=sys.stderr)
        return 2
    target = directory / name / "model.yaml"
    if target.exists():
        print(f"{target} exists; not overwriting it", file=sys.stderr)
        return 1
    catalog = _catalog_with([])
    services = [s.name for r in catalog.feature_repos.values() for s in r.feature_services]
    sources = [s.name for r in catalog.feature_repos.values() for s in r.sources]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        INIT_TEMPLATE.format(
            name=name,
            path=target,
            owner=owner,
            service=services[0] if services else "my_feature_service",
            source=sources[0] if sources else "my_label_source",
            label="label",
        )
    )
    print(f"wrote {target}; edit it, then run: ml-platform validate {target}")
    return 0


def _demo_environment(rows: int | None) -> Path:
    """Point the demo at ``ML_PLATFORM_HOME`` and its Dagster instance; quiet the libraries."""
    home = platform_home()
    os.environ.setdefault(HOME_ENV, str(home))
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if rows is not None:
        os.environ[DEMO_ROWS_ENV] = str(rows)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    return home


def _demo_models(models: list[str] | None) -> list[str] | None:
    """The models to run (default: all); None, with the reason printed, when there are none."""
    catalog = load_catalog(discover_spec_files(Path.cwd()))
    for error in catalog.errors:
        print(error, file=sys.stderr)
    names = models or sorted(catalog.models)
    unknown = [n for n in names if n not in catalog.models]
    if unknown or not names:
        print(f"unknown model(s): {unknown or 'none declared'}", file=sys.stderr)
        return None
    return names


def _execute(
    definitions: Definitions,
    instance: DagsterInstance,
    job_name: str,
    tags: dict[str, str] | None = None,
) -> bool:
    """Run a job in process; print its time per step, and why it failed if it did."""
    from sensors.alerts import failed_checks

    started = time.perf_counter()
    result = definitions.resolve_job_def(job_name).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, tags=tags
    )
    seconds = time.perf_counter() - started
    print(
        f"\n{job_name}: {'succeeded' if result.success else 'FAILED'} "
        f"in {seconds:.1f}s (run {result.run_id})"
    )
    for step, step_seconds in _step_durations(instance, result.run_id):
        print(f"  {step:<45} {step_seconds:8.1f}s")
    if not result.success:
        failed = failed_checks(instance, result.run_id)
        for reason in failed or [str(e.message) for e in result.get_step_failure_events()]:
            print(f"  {reason}")
    return result.success


def _print_champion(name: str) -> None:
    """The champion, the evaluated version's test metrics and every gate's verdict."""
    from ml_platform.datasets.training_set import current_training_set
    from ml_platform.lifecycle.records import current_evaluation
    from resources import ModelRegistryResource, StorageResource

    # The demo runs the local deployment: the same resources its runs use.
    settings = StorageResource(home=str(platform_home())).settings()
    evaluation = current_evaluation(settings, name)
    champion = ModelRegistryResource().registry().champion_version(name)
    data_gate = current_training_set(settings, name).gate or {}
    print(f"\n{name}: champion version {champion} (evaluated version {evaluation.version})")
    for metric in DEMO_METRICS:
        if metric in evaluation.metrics:
            print(f"  test {metric:<18} {evaluation.metrics[metric]:.4f}")
    print("  gates:")
    print(
        f"    {'data_quality (training set)':<28} "
        f"{'passed' if data_gate.get('success') else 'FAILED'}: "
        f"{data_gate.get('summary', '')}"
    )
    for gate in evaluation.gate_results():
        verdict = "passed" if gate.passed else "FAILED"
        print(f"    {gate.name:<28} {verdict}: {gate.description}")


def demo(models: list[str] | None, rows: int | None) -> int:
    """Materialize every model's graph on embedded defaults and print a summary."""
    home = _demo_environment(rows)
    import dagster as dg

    from assets.keys import scoring_job_name, training_job_name
    from ml_platform.definitions import build_definitions

    definitions = build_definitions(Path.cwd())
    names = _demo_models(models)
    if names is None:
        return 2
    instance = dg.DagsterInstance.get()
    print(f"ML_PLATFORM_HOME={home}  DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    status = 0  # the exit code: 1 when any model failed
    for name in names:
        jobs = (training_job_name(name), scoring_job_name(name))
        if not all(_execute(definitions, instance, job) for job in jobs):
            status = 1
            print(f"\n{name}: not promoted; see the failed run in the Dagster UI (make dev)")
            continue
        _print_champion(name)
    print("\nSee the runs in the Dagster UI: make dev   |   MLflow UI: make mlflow")
    return status


def demo_drift(models: list[str] | None, rows: int | None) -> int:
    """Train on undrifted payments, score drifted ones, report drift, let the sensor retrain."""
    home = _demo_environment(rows)
    import dagster as dg

    from assets.keys import monitoring_job_name, training_job_name
    from ml_platform.definitions import build_definitions

    names = _demo_models(models)
    if names is None:
        return 2
    instance = dg.DagsterInstance.get()
    print(f"ML_PLATFORM_HOME={home}  DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    os.environ.pop(DRIFT_START_ENV, None)
    undrifted = build_definitions(Path.cwd())
    print("\n== 1. Train on undrifted data, score its newest window and report drift")
    cursors: dict[str, str | None] = {}
    for name in names:
        for job in (training_job_name(name), monitoring_job_name(name)):
            if not _execute(undrifted, instance, job):
                return 1
        _print_drift_report(name)
        cursors[name] = _sensor_tick(undrifted, instance, name, None).cursor
    os.environ[DRIFT_START_ENV] = DEMO_DRIFT_START
    drifted = build_definitions(Path.cwd())
    print(f"\n== 2. New data, drifted from {DEMO_DRIFT_START}: score, report, ask the sensor")
    if not _generate_sources(drifted, instance):
        return 1
    status = 0
    for name in names:
        status = max(status, _retrain_on_drift(drifted, instance, name, cursors[name]))
    print("\nSee the runs in the Dagster UI: make dev   |   MLflow UI: make mlflow")
    return status


def _generate_sources(definitions: Definitions, instance: DagsterInstance) -> bool:
    """Materialize every generated source (the new data), as the sources' own asset does."""
    from assets.keys import source_key

    catalog = load_catalog(discover_spec_files(Path.cwd()))
    keys = [
        source_key(source.name)
        for repo in catalog.feature_repos.values()
        if repo.generator is not None
        for source in repo.sources
    ]
    result = definitions.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=keys, raise_on_error=False, run_config=QUIET
    )
    print(f"\ngenerated sources: {'succeeded' if result.success else 'FAILED'}")
    return result.success


def _retrain_on_drift(
    definitions: Definitions, instance: DagsterInstance, name: str, cursor: str | None
) -> int:
    """Score and report the drifted window, evaluate the sensor, run the retraining it asks for.

    Returns:
        The exit status: 1 when a run failed or the sensor asked for no retraining.
    """
    from assets.keys import drift_sensor_name, monitoring_job_name, training_job_name
    from resources import ModelRegistryResource

    if not _execute(definitions, instance, monitoring_job_name(name)):
        return 1
    _print_drift_report(name)
    tick = _sensor_tick(definitions, instance, name, cursor)
    if not tick.run_requests:
        print(f"\n{name}: the drift sensor requested no retraining")
        return 1
    request = tick.run_requests[0]
    print(f"\n== 3. The retraining the sensor requested (run key {request.run_key}), gated")
    registry = ModelRegistryResource().registry()
    before = registry.champion_version(name)
    # The daemon's own tags: a daemon that later evaluates the sensor finds this run by its key.
    tags = {
        **request.tags,
        "dagster/run_key": request.run_key or "",
        "dagster/sensor_name": drift_sensor_name(name),
    }
    succeeded = _execute(definitions, instance, training_job_name(name), tags)
    _print_champion(name)
    after = registry.champion_version(name)
    if after != before:
        print(f"  promoted: the retrained version {after} replaces version {before}")
    else:
        print(f"  not promoted: version {before} stays champion")
    print("\n== 4. The sensor again: the same drift event never retrains twice")
    _sensor_tick(definitions, instance, name, tick.cursor)
    return 0 if succeeded else 1


def _print_drift_report(name: str) -> None:
    """The current drift report: verdict, drifted features, prediction and performance drift."""
    from ml_platform.lifecycle.records import current_drift_report
    from resources import StorageResource

    report = current_drift_report(StorageResource(home=str(platform_home())).settings(), name)
    print(
        f"\n{name}/drift_report {report.report_id} (champion v{report.model_version}, "
        f"{report.rows} rows): {report.status}, drift share {report.drift_share:.2f} "
        f"(threshold {report.drift_share_threshold:.2f})"
    )
    for feature in report.drifted_features:
        score = report.feature_scores.get(feature)
        print(f"  drifted: {feature:<28} score {'n/a' if score is None else f'{score:.4f}'}")
    print(f"  prediction drift: {report.prediction_drift}")
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
        print(
            f"  performance ({performance.metric}, {performance.rows} labelled rows): "
            f"{performance.status} ({values or performance.reason})"
        )
    print(f"  retrain_on fired: {', '.join(report.retrain_reasons) or 'nothing'}")
    if report.html_path:
        print(f"  Evidently report: {report.html_path}")


def _sensor_tick(
    definitions: Definitions, instance: DagsterInstance, name: str, cursor: str | None
) -> SensorExecutionData:
    """Evaluate the model's drift sensor once, as the daemon would, and print its decision."""
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
        print(f"  {sensor.name}: RunRequest {request.run_key} for {sensor.job_name}")
    if not tick.run_requests:
        print(f"  {sensor.name}: skipped: {tick.skip_message}")
    return tick


def drift_alert(model: str, reason: str, source: str | None) -> int:
    """Record an external drift alert that the model's drift sensor reacts to."""
    from assets.keys import drift_sensor_name
    from ml_platform.core.audit import AuditLog
    from ml_platform.core.helpers import unknown
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.lifecycle.drift_alerts import raise_drift_alert

    catalog = _catalog_with([])
    if model not in catalog.models:
        print(unknown("model", model, catalog.models), file=sys.stderr)
        return 2
    try:
        alert = raise_drift_alert(
            AuditLog(PlatformSettings.from_env().audit_url), model, reason, source
        )
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    monitoring = catalog.models[model].monitoring
    print(f"recorded drift alert {alert.alert_id} for '{model}' in the audit log")
    print(
        f"{drift_sensor_name(model)} requests one retraining for it (run key "
        f"{model}-drift-{alert.alert_id}); it waits while a training run is in flight or within "
        f"monitoring.cooldown ({monitoring.cooldown}) of the last drift retraining"
    )
    if not monitoring.sensor_running:
        print(
            f"note: {drift_sensor_name(model)} is stopped by default (the spec sets no "
            "monitoring.retrain_on); start it in the Dagster UI (Automation) to react to alerts"
        )
    return 0


def _step_durations(instance: DagsterInstance, run_id: str) -> list[tuple[str, float]]:
    import dagster as dg

    stats = instance.get_run_step_stats(run_id)
    return [
        (s.step_key, (s.end_time or s.start_time or 0) - (s.start_time or 0))
        for s in stats
        if s.status is not None and s.status != dg.DagsterEventType.STEP_SKIPPED
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the ``ml-platform`` command; returns its exit status."""
    parser = argparse.ArgumentParser(prog="ml-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="run the example end to end on embedded defaults"
    )
    demo_parser.add_argument("--model", action="append", help="model to run (default: all)")
    demo_parser.add_argument(
        "--rows", type=int, help=f"rows of generated data (sets {DEMO_ROWS_ENV}; e.g. 1000000)"
    )
    demo_parser.add_argument(
        "--drift",
        action="store_true",
        help="train on undrifted data, score drifted data, report drift and let the drift "
        "sensor retrain",
    )
    validate_parser = commands.add_parser("validate", help="check spec files, exit 1 on errors")
    validate_parser.add_argument("paths", nargs="+", type=Path)
    init_parser = commands.add_parser("init", help="scaffold a new model spec")
    init_parser.add_argument("name")
    init_parser.add_argument("--directory", type=Path, default=Path("assets"))
    init_parser.add_argument("--owner", default="you@example.com")
    alert_parser = commands.add_parser(
        "drift-alert", help="raise a drift alert from outside; the model's drift sensor retrains"
    )
    alert_parser.add_argument("model")
    alert_parser.add_argument("--reason", required=True, help="why the model drifted")
    alert_parser.add_argument("--source", help="who raised it (e.g. the external monitor)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return (demo_drift if args.drift else demo)(args.model, args.rows)
        if args.command == "validate":
            return validate(args.paths)
        if args.command == "drift-alert":
            return drift_alert(args.model, args.reason, args.source)
        return init(args.name, args.directory, args.owner)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
