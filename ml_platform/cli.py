"""The ``ml-platform`` command: ``demo``, ``validate``, ``init``."""

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
    from dagster import DagsterInstance

DEMO_ROWS_ENV = "ML_PLATFORM_DEMO_ROWS"
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

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


def demo(models: list[str] | None, rows: int | None) -> int:
    """Materialize every model's graph on embedded defaults and print a summary."""
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

    import dagster as dg

    from assets.keys import scoring_job_name, training_job_name
    from ml_platform.datasets.training_set import current_training_set
    from ml_platform.definitions import build_definitions
    from ml_platform.lifecycle.records import current_evaluation
    from resources import ModelRegistryResource, StorageResource
    from sensors.alerts import failed_checks

    definitions = build_definitions(Path.cwd())
    catalog = load_catalog(discover_spec_files(Path.cwd()))
    for error in catalog.errors:
        print(error, file=sys.stderr)
    names = models or sorted(catalog.models)
    unknown = [n for n in names if n not in catalog.models]
    if unknown or not names:
        print(f"unknown model(s): {unknown or 'none declared'}", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    # The demo runs the local deployment: the same resources its runs use.
    settings = StorageResource(home=str(home)).settings()
    registry = ModelRegistryResource().registry()
    print(f"ML_PLATFORM_HOME={home}  DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    status = 0  # the exit code: 1 when any model failed
    for name in names:
        failed_run = False
        for job_name in (training_job_name(name), scoring_job_name(name)):
            started = time.perf_counter()
            result = definitions.resolve_job_def(job_name).execute_in_process(
                instance=instance, raise_on_error=False, run_config=QUIET
            )
            seconds = time.perf_counter() - started
            print(
                f"\n{job_name}: {'succeeded' if result.success else 'FAILED'} "
                f"in {seconds:.1f}s (run {result.run_id})"
            )
            for step, step_seconds in _step_durations(instance, result.run_id):
                print(f"  {step:<45} {step_seconds:8.1f}s")
            if not result.success:
                status, failed_run = 1, True
                failed = failed_checks(instance, result.run_id)
                for reason in failed or [str(e.message) for e in result.get_step_failure_events()]:
                    print(f"  {reason}")
                break
        if failed_run:
            print(f"\n{name}: not promoted; see the failed run in the Dagster UI (make dev)")
            continue
        evaluation = current_evaluation(settings, name)
        champion = registry.champion_version(name)
        data_gate = current_training_set(settings, name).gate or {}
        print(f"\n{name}: champion version {champion} (evaluated version {evaluation.version})")
        for metric in (
            "roc_auc",
            "pr_auc",
            "precision",
            "recall",
            "f1",
            "calibration_error",
            "accuracy",
            "macro_f1",
            "rmse",
            "mae",
            "r2",
        ):
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
    print("\nSee the runs in the Dagster UI: make dev   |   MLflow UI: make mlflow")
    return status


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
    validate_parser = commands.add_parser("validate", help="check spec files, exit 1 on errors")
    validate_parser.add_argument("paths", nargs="+", type=Path)
    init_parser = commands.add_parser("init", help="scaffold a new model spec")
    init_parser.add_argument("name")
    init_parser.add_argument("--directory", type=Path, default=Path("assets"))
    init_parser.add_argument("--owner", default="you@example.com")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args.model, args.rows)
        if args.command == "validate":
            return validate(args.paths)
        return init(args.name, args.directory, args.owner)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
