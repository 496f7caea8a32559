"""What every command shares: the environment, the project's specs, the models they declare."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ml_platform.cli.output import echo
from ml_platform.core.settings import HOME_ENV, platform_home
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.loading import discover_spec_files, load_catalog

DEMO_ROWS_ENV = "ML_PLATFORM_DEMO_ROWS"


def model_command(
    commands: argparse._SubParsersAction, name: str, summary: str, text: str, model_help: str
) -> argparse.ArgumentParser:
    """Add a command acting on one model: its MODEL positional, its help text shown as written.

    Args:
        commands: The ``ml-platform`` subcommands.
        name: The command's name.
        summary: The one line ``ml-platform --help`` shows.
        text: The command's own ``--help`` text.
        model_help: The help of the MODEL positional.

    Returns:
        The command's parser, for its options.
    """
    parser = commands.add_parser(
        name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", metavar="MODEL", help=model_help)
    return parser


def prepare_environment(rows: int | None = None) -> Path:
    """Point the command at ``ML_PLATFORM_HOME`` and its Dagster instance; quiet the libraries.

    Args:
        rows: rows of generated example data (sets ``ML_PLATFORM_DEMO_ROWS``), if given.

    Returns:
        The platform home.
    """
    home = platform_home()
    os.environ.setdefault(HOME_ENV, str(home))
    if not os.environ.get("DAGSTER_HOME", "").strip():  # unset or empty: not the working directory
        os.environ["DAGSTER_HOME"] = str(home / "dagster")
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    # The platform's local instance settings; else an empty dagster.yaml: Dagster's defaults,
    # without its warning that the file is missing.
    from ml_platform.cli.launch import write_local_instance_config

    if not write_local_instance_config(dagster_home):
        (dagster_home / "dagster.yaml").touch(exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if rows is not None:
        os.environ[DEMO_ROWS_ENV] = str(rows)
    return home


def catalog_with(paths: list[Path]) -> Catalog:
    """The project's specs (``assets/`` and ``ML_PLATFORM_SPEC_PATH``) plus ``paths``.

    Args:
        paths: extra spec files or directories (searched for ``*.yaml`` and ``*.yml``).

    Returns:
        The loaded catalog, with every file's errors.
    """
    files = discover_spec_files(Path.cwd())
    for path in paths:
        files += sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
    return load_catalog(list(dict.fromkeys(p.resolve() for p in files)))


def model_names(models: list[str] | None) -> list[str] | None:
    """The models to act on (default: all the project declares).

    Args:
        models: the names asked for, or None for all.

    Returns:
        The names; None, with the reason shown, when one is unknown or there are none.
    """
    from ml_platform.core.helpers import unknown

    catalog = catalog_with([])
    for error in catalog.errors:
        echo(str(error), err=True)
    names = models or sorted(catalog.models)
    if not names:
        echo(
            "no model declared (a spec with 'kind: model'); see: ml-platform init --help", err=True
        )
        return None
    for name in names:
        if name not in catalog.models:
            echo(unknown("model", name, catalog.models), err=True)
            return None
    return names


def passive_thread_waits() -> None:
    """Let idle OpenMP threads sleep instead of spinning, unless the user chose otherwise.

    The demo trains in its own process and the prediction service predicts in its. With torch's
    default (spinning) waits, each parallel region waits for threads the kernel has descheduled
    whenever other programs share the cores: on the 2-core machine of ``bench/RESULTS.md``,
    shared with other jobs, training ran 8x slower and a one-row prediction took 10 ms instead of
    2 ms. The wait policy changes neither the threads nor how work is divided, so results are
    the same. It applies only where torch is not loaded yet (both commands import it later).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
