"""Launch a job on the Dagster instance as a run of the code location in ``workspace.yaml``.

``dagster job launch`` hands a run to the instance's run coordinator; the default local one
queues it for the daemon, so nothing runs unless ``dagster dev`` is up. Here the run is created
the way the webserver creates it (the remote job, its execution plan and the remote origin of the
``workspace.yaml`` code location, from that location's code server) and then executed in this
process with Dagster's ``execute_run_iterator``, as a run worker would. So the run works without a
daemon, appears in the UI's job history and timeline of that code location (it can be re-executed
there), and its events arrive here as they happen, for the progress shown.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ml_platform.cli.output import console
from ml_platform.core.helpers import unknown

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterEvent, DagsterInstance, DagsterRun
    from dagster._core.remote_representation.code_location import CodeLocation
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.workspace.context import WorkspaceProcessContext

WORKSPACE_FILE = "workspace.yaml"
LOCAL_INSTANCE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "local" / "dagster.yaml"
"""The local instance's settings: telemetry off, one step per pool, one training run per model."""
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
"""Run config of every launched run: Dagster's console log at INFO, not DEBUG."""


class LaunchError(Exception):
    """The workspace or its code location cannot launch the job (missing, failed to load)."""


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check evaluated by a run.

    Attributes:
        asset: the checked asset, e.g. ``loan_default/evaluation``.
        check: the check name, e.g. ``auc_at_least_threshold``.
        passed: whether it passed.
        description: why, in one line (the check's own description of the outcome).
    """

    asset: str
    check: str
    passed: bool
    description: str


@dataclass
class RunOutcome:
    """What a launched run did.

    Attributes:
        job_name: the job.
        run_id: the Dagster run id.
        location: the code location the run belongs to.
        success: whether the run succeeded.
        seconds: wall time of the launch and the run.
        steps: ``(step key, seconds)`` of every step that ran, in order.
        failed_steps: ``"<step>: <error>"`` for every failed step.
        checks: every asset check the run evaluated, in order.
    """

    job_name: str
    run_id: str
    location: str
    success: bool = False
    seconds: float = 0.0
    steps: list[tuple[str, float]] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[CheckOutcome]:
        """The checks that failed."""
        return [check for check in self.checks if not check.passed]


class Launcher:
    """Creates runs of one code location on the instance and executes them here.

    Attributes:
        instance: the Dagster instance (``DAGSTER_HOME``) that records the runs.
        location_name: the code location, as ``workspace.yaml`` names it.
    """

    def __init__(
        self, instance: DagsterInstance, context: WorkspaceProcessContext, location_name: str
    ) -> None:
        self.instance = instance
        self._context = context
        self.location_name = location_name

    def _location(self) -> tuple[CodeLocation, RemoteRepository]:
        request = self._context.create_request_context()
        location = request.get_code_location(self.location_name)
        (repository,) = location.get_repositories().values()
        return location, repository

    def job_names(self) -> list[str]:
        """Every job of the code location."""
        _, repository = self._location()
        return sorted(job.name for job in repository.get_all_jobs())

    def launch(
        self,
        job_name: str,
        tags: Mapping[str, str] | None = None,
        asset_selection: list[AssetKey] | None = None,
    ) -> RunOutcome:
        """Create a run of ``job_name`` on the instance and execute it, showing its progress.

        Args:
            job_name: a job of the code location.
            tags: tags added to the job's own tags.
            asset_selection: run only these assets of the job.

        Returns:
            The run's outcome (also when it failed).

        Raises:
            LaunchError: the code location has no such job.
        """
        run = self._create_run(job_name, dict(tags or {}), asset_selection)
        started = time.perf_counter()
        outcome = RunOutcome(job_name, run.run_id, self.location_name)
        self._execute(run, outcome)
        outcome.seconds = time.perf_counter() - started
        finished = self.instance.get_run_by_id(run.run_id)
        outcome.success = finished is not None and finished.is_success
        return outcome

    def _create_run(
        self, job_name: str, tags: dict[str, str], asset_selection: list[AssetKey] | None
    ) -> DagsterRun:
        from dagster._core.definitions.selector import JobSubsetSelector
        from dagster._utils.tags import normalize_tags

        location, repository = self._location()
        if not repository.has_job(job_name):
            names = [job.name for job in repository.get_all_jobs()]
            raise LaunchError(f"code location '{location.name}': {unknown('job', job_name, names)}")
        selector = JobSubsetSelector(
            location_name=location.name,
            repository_name=repository.name,
            job_name=job_name,
            op_selection=None,
            asset_selection=set(asset_selection) if asset_selection else None,
        )
        remote_job = location.get_job(selector)
        plan = location.get_execution_plan(
            remote_job, QUIET, step_keys_to_execute=None, known_state=None, instance=self.instance
        ).execution_plan_snapshot
        return self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=QUIET,
            resolved_op_selection=remote_job.resolved_op_selection,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=normalize_tags({**remote_job.tags, **tags}),
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=frozenset(asset_selection) if asset_selection else None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )

    def _execute(self, run: DagsterRun, outcome: RunOutcome) -> None:
        from dagster._core.definitions.reconstruct import ReconstructableJob
        from dagster._core.execution.api import execute_run_iterator
        from dagster._utils.hosted_user_process import recon_job_from_origin

        # A run worker loads the definitions afresh. Dagster keeps the last ones loaded in the
        # process (lru_cache by job), which would run a job again with the environment of an
        # earlier run (another ML_PLATFORM_DEMO_ROWS, the drift demo's undrifted data).
        ReconstructableJob.get_repository_definition.cache_clear()
        ReconstructableJob.get_definition.cache_clear()

        if run.job_code_origin is None:  # create_run always sets it
            raise LaunchError(f"run {run.run_id} has no code origin to execute")
        job = recon_job_from_origin(run.job_code_origin)
        total = len(run.step_keys_to_execute or [])
        out = console()
        out.print(
            Text.assemble(
                ("run ", ""),
                (outcome.job_name, "bold"),
                (f"  {outcome.run_id}  (code location {self.location_name})", "dim"),
            )
        )
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=out,
            transient=True,
        )
        step_started: dict[str, float] = {}
        with progress, _training_bars(self.instance, run.run_id, progress):
            task = progress.add_task(outcome.job_name, total=total or None)
            for event in execute_run_iterator(job, run, self.instance):
                _show_event(event, outcome, step_started, progress, task)


_EPOCH_LINE = re.compile(r"^(epoch|round) (\d+)/(\d+): .*?(?:, ETA (\S+))?$")
"""A trainer's progress line: ``epoch 3/20: ... 52,310 rows/s, ETA 1m05s`` (``round`` for trees)."""


@contextmanager
def _training_bars(instance: DagsterInstance, run_id: str, progress: Progress) -> Iterator[None]:
    """A progress bar per training step, moved by its per-epoch log lines as they are stored.

    Step logs reach the event log, not the run's event stream, so they are watched there. A bar
    is a nicety: when the instance cannot be watched, the run goes on without one.
    """
    from dagster._core.events.log import EventLogEntry

    bars: dict[str, TaskID] = {}

    def on_entry(entry: EventLogEntry, cursor: object) -> None:
        del cursor
        match = _EPOCH_LINE.match(entry.user_message or "")
        if match is None:
            return
        unit, done, total, eta = match.groups()
        step = entry.step_key or "training"
        if step not in bars:
            bars[step] = progress.add_task(f"  {step}", total=int(total))
        description = f"  {step}: {unit} {done}/{total}" + (f", ETA {eta}" if eta else "")
        progress.update(bars[step], completed=int(done), total=int(total), description=description)

    try:
        instance.watch_event_logs(run_id, None, on_entry)
        watching = True
    except Exception:  # e.g. an event log storage that cannot be watched
        watching = False
    try:
        yield
    finally:
        if watching:
            instance.end_watch_event_logs(run_id, on_entry)


def _show_event(
    event: DagsterEvent,
    outcome: RunOutcome,
    step_started: dict[str, float],
    progress: Progress,
    task: object,
) -> None:
    """Show one run event (step start and end, asset check) and record it in ``outcome``."""
    import dagster as dg

    out = progress.console
    step = event.step_key or ""
    kind = event.event_type
    if kind == dg.DagsterEventType.STEP_START:
        step_started[step] = time.perf_counter()
        progress.update(task, description=step)  # type: ignore[arg-type]
        out.print(Text(f"  started  {step}", style="dim"))
    elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
        seconds = time.perf_counter() - step_started.get(step, time.perf_counter())
        outcome.steps.append((step, seconds))
        progress.advance(task)  # type: ignore[arg-type]
        if kind == dg.DagsterEventType.STEP_SUCCESS:
            out.print(Text(f"  done     {step:<45} {seconds:8.1f}s", style="green"))
        else:
            error = event.step_failure_data.error if event.step_failure_data else None
            message = error.message.strip() if error else "failed"
            outcome.failed_steps.append(f"{step}: {message}")
            out.print(Text(f"  FAILED   {step:<45} {seconds:8.1f}s: {message}", style="bold red"))
    elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        evaluation = event.event_specific_data
        check = CheckOutcome(
            asset=evaluation.asset_key.to_user_string(),  # type: ignore[union-attr]
            check=evaluation.check_name,  # type: ignore[union-attr]
            passed=bool(evaluation.passed),  # type: ignore[union-attr]
            description=(getattr(evaluation, "description", None) or "").strip(),
        )
        outcome.checks.append(check)
        verdict = "passed" if check.passed else "FAILED"
        out.print(
            Text(
                f"  check    {check.asset}: {check.check} {verdict}",
                style="green" if check.passed else "bold red",
            )
        )


def write_local_instance_config(dagster_home: Path) -> bool:
    """Give a local Dagster instance the platform's settings (``deploy/local/dagster.yaml``).

    Without them, pools such as ``gpu-t4`` show "no slots configured" and nothing limits
    training runs. An existing ``dagster.yaml`` with content is the operator's and is kept; an
    empty one (Dagster's defaults) is replaced.

    Args:
        dagster_home: The instance's directory (``DAGSTER_HOME``); created if missing.

    Returns:
        Whether the file was written.
    """
    target = dagster_home / "dagster.yaml"
    if (target.exists() and target.stat().st_size > 0) or not LOCAL_INSTANCE_CONFIG.is_file():
        return False
    dagster_home.mkdir(parents=True, exist_ok=True)
    target.write_text(LOCAL_INSTANCE_CONFIG.read_text())
    return True


@contextmanager
def open_launcher(
    instance: DagsterInstance, workspace_file: Path | None = None
) -> Iterator[Launcher]:
    """Load the code location of ``workspace.yaml`` (its code server) for launching runs.

    Args:
        instance: the Dagster instance that records the runs.
        workspace_file: the workspace file; default ``workspace.yaml`` in the current directory.

    Yields:
        A launcher on the workspace's one code location; its code server stops on exit.

    Raises:
        LaunchError: no workspace file, or its code location failed to load.
    """
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    path = (workspace_file or Path.cwd() / WORKSPACE_FILE).resolve()
    if not path.is_file():
        raise LaunchError(
            f"no {path.name} at {path.parent}: run ml-platform from the project root (where "
            "workspace.yaml is) or pass --workspace PATH"
        )
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(path)])) as context:
        entries = context.create_request_context().get_code_location_entries()
        if len(entries) != 1:
            raise LaunchError(
                f"{path} declares {len(entries)} code locations; ml-platform launches runs of "
                "exactly one (the ml_platform.definitions module)"
            )
        ((name, entry),) = entries.items()
        if entry.load_error is not None:
            raise LaunchError(
                f"code location '{name}' of {path} failed to load: {entry.load_error.message}"
            )
        yield Launcher(instance, context, name)
