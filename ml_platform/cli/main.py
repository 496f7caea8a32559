"""The ``ml-platform`` command line: parsing, help texts, and the dispatch to each command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ml_platform.cli.common import DEMO_ROWS_ENV
from ml_platform.cli.output import echo
from ml_platform.spec.errors import SpecError

DESCRIPTION = """\
The golden path of ml_platform from a terminal: scaffold a model from your parquet files, check its
specs, train it on the Dagster instance (the runs appear in the Dagster UI), see where every model
stands, and run the whole example.

Run it from the project root (where workspace.yaml is). State lives under ML_PLATFORM_HOME
(default ./.ml_platform); Dagster's instance under DAGSTER_HOME (default $ML_PLATFORM_HOME/dagster),
the same one `make dev` shows.

examples:
  ml-platform init churn --from-parquet data/customers.parquet data/churn_labels.parquet
  ml-platform validate assets/churn
  ml-platform run churn
  ml-platform status churn
  ml-platform demo"""

RUN_HELP = """\
Launch one of the model's jobs on the Dagster instance and follow it. The run is created as the
code location of workspace.yaml (the one `make dev` loads), so it appears in the Dagster UI's run
history and timeline and can be re-executed there; it executes in this process, so no daemon is
needed. Step starts and ends and every asset check are shown as they happen; at the end, the time
per step, the check results and (for training) the champion and its gates. The exit status is 1
when the run failed, naming the failed steps and checks.

examples:
  ml-platform run fraud_detection
  ml-platform run fraud_detection --job scoring"""

STATUS_HELP = """\
Show where each model stands: the champion version and its primary test metric (from MLflow), the
last training run (Dagster run id, status and time, from the instance), the gate results of the
newest evaluation and the last drift verdict (from the records under the artifact root). A fresh
home shows "no champion yet". Exits 1 when MLflow cannot be read (the rest is still shown).

examples:
  ml-platform status
  ml-platform status fraud_detection"""

INIT_HELP = """\
Scaffold a new model under DIRECTORY/NAME/. Without --from-parquet, writes model.yaml using the
project's first feature service. With --from-parquet, reads the files' schemas (no rows) and also
writes features.yaml: one source per file with every column and its type, the timestamp field of
each file (its one timestamp column; --timestamp when it has several), entities (id-like columns
the label file shares with the others), the label (a boolean or 0/1 column, preferring names like
label, target or is_*), one feature view per other file; then checks both files as `validate`
does. Source paths are written absolute, so the files can stay where they are.

examples:
  ml-platform init churn
  ml-platform init churn --from-parquet customers.parquet labels.parquet
  ml-platform init fraud --from-parquet tx.parquet --timestamp event_timestamp --label is_fraud"""

VALIDATE_HELP = """\
Check spec files (kind: model or kind: features) together with the project's feature repos, as
the code location loads them: every error names the file, the field and the fix. Exits 1 when a
spec is invalid or none is found.

examples:
  ml-platform validate assets/churn/model.yaml
  ml-platform validate assets/"""

DEMO_HELP = """\
Run the example end to end on embedded defaults (SQLite MLflow, local Feast, local files): every
model's training and scoring jobs, launched on the Dagster instance like `ml-platform run`, so
they appear in the UI (`make dev`). Ends with each champion, its test metrics and its gates.
Exits 1 when a model's run failed.

examples:
  ml-platform demo
  ml-platform demo --rows 1000000
  ml-platform demo --drift"""

DRIFT_ALERT_HELP = """\
Record a drift alert raised outside the platform (e.g. by an external monitor) in the audit log.
The model's drift sensor requests one retraining per alert (run key MODEL-drift-<alert id>),
waiting while a training run is in flight or within the spec's monitoring.cooldown.

examples:
  ml-platform drift-alert fraud_detection --reason "PSI 0.4 on amount" --source arize"""


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, text: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _workspace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        type=Path,
        metavar="PATH",
        help="the workspace file whose code location runs the jobs, as `dagster dev -w` takes "
        "it (default: ./workspace.yaml). Example: --workspace workspace.yaml",
    )


def _add_init(commands: argparse._SubParsersAction) -> None:
    """``ml-platform init`` and its options."""
    init = _command(commands, "init", "scaffold a new model (and its features file)", INIT_HELP)
    init.add_argument("name", metavar="NAME", help="the new model's name (letters, digits, _)")
    init.add_argument(
        "--directory",
        type=Path,
        default=Path("assets"),
        help="where NAME/ is created; the project loads specs under assets/ and "
        "ML_PLATFORM_SPEC_PATH (default: assets). Example: --directory specs",
    )
    init.add_argument(
        "--owner",
        default="you@example.com",
        help="the model's owner, shown in the UI and MLflow. Example: --owner risk@acme.com",
    )
    init.add_argument(
        "--from-parquet",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="parquet files to build the features file from, one source each (the label file "
        "among them). Example: --from-parquet data/applicants.parquet data/loans.parquet",
    )
    init.add_argument(
        "--timestamp",
        action="append",
        default=[],
        metavar="COLUMN",
        help="the event-time column of a file that has several timestamp columns; repeat for "
        "several files. Example: --timestamp event_timestamp",
    )
    init.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="COLUMN",
        help="the label column, when the proposed one is wrong. Example: --label defaulted",
    )
    init.add_argument(
        "--entity",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a join key that identifies an entity (repeat for several), instead of the "
        "id-like columns shared between files. Example: --entity customer_id",
    )


def _add_demo(commands: argparse._SubParsersAction) -> None:
    """``ml-platform demo`` and its options."""
    demo = _command(commands, "demo", "run the example end to end", DEMO_HELP)
    demo.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="a model to run; repeat for several (default: all). Example: --model fraud_detection",
    )
    demo.add_argument(
        "--rows",
        type=int,
        help=f"rows of generated payments (sets {DEMO_ROWS_ENV}; default 100000). "
        "Example: --rows 1000000",
    )
    demo.add_argument(
        "--drift",
        action="store_true",
        help="train on undrifted data, score drifted data, report drift and let the drift "
        "sensor retrain, through the gates. Example: ml-platform demo --drift",
    )
    _workspace_option(demo)


def _add_drift_alert(commands: argparse._SubParsersAction) -> None:
    """``ml-platform drift-alert`` and its options."""
    alert = _command(
        commands, "drift-alert", "raise a drift alert from outside the platform", DRIFT_ALERT_HELP
    )
    alert.add_argument("model", metavar="MODEL", help="the model that drifted")
    alert.add_argument(
        "--reason",
        required=True,
        help="why the model drifted, shown on the retraining run. Example: --reason "
        '"PSI 0.4 on amount"',
    )
    alert.add_argument("--source", help="who raised it. Example: --source arize")


def parser() -> argparse.ArgumentParser:
    """The ``ml-platform`` argument parser, with every command's help text.

    Returns:
        The parser.
    """
    from ml_platform.cli.run import JOBS

    root = argparse.ArgumentParser(
        prog="ml-platform",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(commands, "run", "train (or score, monitor) a model on the instance", RUN_HELP)
    run.add_argument("model", metavar="MODEL", help="the model's name, as its spec's `name`")
    run.add_argument(
        "--job",
        choices=JOBS,
        default="training",
        help="which of the model's jobs: training (features, training set, model, evaluation, "
        "champion), scoring (predictions with the champion) or monitoring (predictions and the "
        "drift report). Default: training. Example: --job scoring",
    )
    _workspace_option(run)

    status = _command(commands, "status", "where each model stands", STATUS_HELP)
    status.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="the models to show (default: every model of the project). Example: fraud_detection",
    )

    _add_init(commands)

    validate = _command(commands, "validate", "check spec files", VALIDATE_HELP)
    validate.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="spec files, or directories searched for *.yaml. Example: assets/churn",
    )

    _add_demo(commands)
    _add_drift_alert(commands)
    from ml_platform.cli.calls import add_calls_command

    add_calls_command(commands)
    from ml_platform.cli.serve import add_serve_command

    add_serve_command(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    """Run the ``ml-platform`` command.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = parser().parse_args(argv)
    try:
        if args.command == "run":
            from ml_platform.cli.run import run_model

            return run_model(args.model, args.job, args.workspace)
        if args.command == "status":
            from ml_platform.cli.status import status

            return status(args.models)
        if args.command == "demo":
            from ml_platform.cli.demo import demo, demo_drift

            return (demo_drift if args.drift else demo)(args.model, args.rows, args.workspace)
        if args.command == "serve":
            from ml_platform.cli.serve import serve

            return serve(
                args.model, args.host, args.port, args.refresh_seconds, args.allow_anonymous
            )
        if args.command == "calls":
            from ml_platform.cli.calls import run_calls

            return run_calls(args)
        if args.command == "drift-alert":
            from ml_platform.cli.drift_alert import drift_alert

            return drift_alert(args.model, args.reason, args.source)
        from ml_platform.cli.scaffold import init, validate

        if args.command == "validate":
            return validate(args.paths)
        choices = {"timestamp": args.timestamp, "label": args.label, "entity": args.entity}
        return init(args.name, args.directory, args.owner, args.from_parquet, choices)
    except SpecError as error:
        echo(str(error), err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
