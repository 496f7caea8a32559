"""GPU pools on a real DagsterInstance: the pool the platform declares is the one enforced.

The model asset that ``build_definitions`` builds from a spec carries ``pool(profile)`` for its
compute profile. The instance is configured as ``deploy/helm/values.yaml`` configures the
deployment's (``concurrency.pools``: op granularity, one slot per pool; ``runMonitoring``), and
training runs are executed by the run worker's own command (``dagster api execute_run``, what a
Kubernetes run pod runs), one process per run:

- five concurrent runs whose training steps claim that pool: at most one step holds the slot at
  any time, and all five succeed;
- a run killed (SIGKILL) while its step holds the slot keeps the slot claimed until the run is
  marked failed (what run monitoring does on Kubernetes when the run's Job has failed) and the
  monitoring daemon's iteration frees the slots of finished runs, which it does only when
  ``free_slots_after_run_end_seconds`` is set.

The instance stores its runs and events on a real PostgreSQL server (``postgres_url`` of
tests/postgres.py), as the chart deploys it. Not on SQLite: its event log storage reports
``supports_global_concurrency_limits`` in dagster 1.13, but it ignores the SELECT ... FOR UPDATE
of a claim, and a one-slot pool was seen running two and three of five steps at once there.
"""

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster import OpExecutionContext
from dagster._core.definitions.reconstruct import (
    ReconstructableJob,
    build_reconstructable_job,
)
from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.daemon import MonitoringDaemon
from dagster._grpc.types import ExecuteRunArgs

from ml_platform.compute.kubernetes import pool
from ml_platform.compute.profiles import COMPUTE_PROFILES

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HELM_VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
WORK_DIR_ENV = "ML_PLATFORM_POOL_TEST_DIR"
HOLD_ENV = "ML_PLATFORM_POOL_TEST_HOLD_SECONDS"
RUNS_ENV = "ML_PLATFORM_POOL_TEST_RUNS"
INDEX_ENV = "ML_PLATFORM_POOL_TEST_INDEX"
POOL_ENV = "ML_PLATFORM_POOL_TEST_POOL"
GPU_PROFILE = "gpu-t4"
CONCURRENT_RUNS = 5
WAIT_SECONDS = 120  # an upper bound for anything to happen, never a duration under test
FREE_WAIT_SECONDS = 20  # the daemon frees the slot about a second after the run failed


def _arrive(context: OpExecutionContext) -> None:
    """Start the training steps of the runs one after another, all while the first one trains.

    Every run's worker waits for the others, then for the training steps of the runs before it
    to be queued for the pool (or done): without the pool the five steps would train at once.
    Entering the queue in turn avoids a race of dagster 1.13 itself: steps that ask for a free
    slot in the same instant are each assigned it (``has_unassigned_slots`` then
    ``add_pending_step``, outside any transaction) and then all claim it (a SELECT ... FOR
    UPDATE and an UPDATE in autocommit mode), which this test saw put two steps in a one-slot
    pool on Postgres.
    """
    work = Path(os.environ[WORK_DIR_ENV])
    (work / f"{context.run_id}.arrived").touch()
    runs, index = int(os.environ[RUNS_ENV]), int(os.environ[INDEX_ENV])
    deadline = time.monotonic() + WAIT_SECONDS
    while len(list(work.glob("*.arrived"))) < runs and time.monotonic() < deadline:
        time.sleep(0.05)
    storage = context.instance.event_log_storage
    while time.monotonic() < deadline:
        queued = len(storage.get_concurrency_info(os.environ[POOL_ENV]).pending_steps)
        if queued + len(list(work.glob("*.end"))) >= index:
            break
        time.sleep(0.02)


def _train(context: OpExecutionContext) -> None:
    """Holds the pool's slot while it runs; records when it started and ended."""
    work = Path(os.environ[WORK_DIR_ENV])
    (work / f"{context.run_id}.start").write_text(str(time.time_ns()))
    time.sleep(float(os.environ.get(HOLD_ENV, "0.3")))
    (work / f"{context.run_id}.end").write_text(str(time.time_ns()))


def training_job(pool_name: str) -> dg.JobDefinition:
    """A training run: wait for the other runs' workers, then a training step in ``pool_name``.

    Module-level so that run workers rebuild it from the run's origin
    (``build_reconstructable_job``).
    """

    arrive = dg.op(name="arrive")(_arrive)
    train = dg.op(name="train", pool=pool_name, ins={"after": dg.In(dg.Nothing)})(_train)

    # One process per run, as a run pod with the in-process executor: the pool is what
    # serializes the steps, across processes.
    @dg.job(name="pool_training", executor_def=dg.in_process_executor)
    def job() -> None:
        train(after=arrive())

    return job


def _helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _instance_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The instance settings the chart renders from ``values`` (templates/helpers/instance/
    _concurrency.tpl and the run_monitoring block of configmap-instance.yaml)."""
    pools = values["concurrency"]["pools"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    run_monitoring = {
        "enabled": monitoring["enabled"],
        "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        "poll_interval_seconds": monitoring["pollIntervalSeconds"],
    }
    if monitoring.get("freeSlotsAfterRunEndSeconds"):
        run_monitoring["free_slots_after_run_end_seconds"] = monitoring[
            "freeSlotsAfterRunEndSeconds"
        ]
    return {
        "concurrency": {
            "pools": {"granularity": pools["granularity"], "default_limit": pools["defaultLimit"]}
        },
        "run_monitoring": run_monitoring,
    }


def _platform_pool(tmp_path: Path) -> str:
    """The pool of the real ``model`` asset of a spec with ``GPU_PROFILE``, checked against
    ``pool(profile)`` for every model of the project and every compute profile."""
    from ml_platform.compute.profiles import load_profiles
    from ml_platform.definitions import build_definitions
    from ml_platform.spec.loading import load_project
    from tests.e2e import loans

    specs = loans.write_specs(tmp_path / "specs", compute={"profile": GPU_PROFILE})
    for name in COMPUTE_PROFILES:
        model = f"{loans.MODEL}_{name.replace('-', '_').replace('.', '_')}"
        spec = loans.model_spec(name=model, compute={"profile": name})
        (specs / f"{model}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    catalog = load_project(PROJECT_ROOT, str(specs))
    assert not catalog.errors, catalog.errors
    definitions = build_definitions(PROJECT_ROOT, spec_path=str(specs))
    profiles = load_profiles()
    pools = {}
    for model in catalog.models.values():
        asset = definitions.get_assets_def(dg.AssetKey([model.name, "model"]))
        expected = pool(profiles[model.compute.profile])
        assert asset.op.pool == expected, (
            f"{model.name}/model declares pool {asset.op.pool!r}, its profile "
            f"{model.compute.profile!r} needs {expected!r}"
        )
        pools[model.name] = asset.op.pool
    assert {pools[m] for m in catalog.models if m.startswith(loans.MODEL)} >= {
        pool(p) for p in COMPUTE_PROFILES.values() if p.uses_gpu
    }
    platform_pool = pools[loans.MODEL]
    assert platform_pool == pool(COMPUTE_PROFILES[GPU_PROFILE]) == "gpu-t4"
    return platform_pool


def _recon_job(pool_name: str) -> ReconstructableJob:
    return build_reconstructable_job(
        __name__, training_job.__name__, (pool_name,), {}, str(PROJECT_ROOT)
    )


def _start_runs(
    instance: dg.DagsterInstance, pool_name: str, count: int, work: Path, hold: float
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """Create ``count`` runs and start a run worker process (``dagster api execute_run``) each."""
    recon = _recon_job(pool_name)
    origin = recon.get_python_origin()
    env = {
        **os.environ,
        WORK_DIR_ENV: str(work),
        HOLD_ENV: str(hold),
        RUNS_ENV: str(count),
        POOL_ENV: pool_name,
    }
    started = []
    for index in range(count):
        run = instance.create_run_for_job(job_def=recon.get_definition(), job_code_origin=origin)
        args = ExecuteRunArgs(
            job_origin=origin,
            run_id=run.run_id,
            instance_ref=instance.get_ref(),
            set_exit_code_on_failure=True,
        ).get_command_args()
        assert args[-3:-1] == ["api", "execute_run"], args[:-1]
        with (work / f"{run.run_id}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dagster", *args[-3:]],
                cwd=PROJECT_ROOT,
                env={**env, INDEX_ENV: str(index)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append((run.run_id, process))
    return started


def _limit_to_one_slot(instance: dg.DagsterInstance, pool_name: str) -> None:
    """What ``dagster instance concurrency set POOL 1`` does (docs/kubernetes.md, step 4).

    Relying on ``concurrency.pools.defaultLimit`` alone is not enough: dagster 1.13 applies the
    default lazily, in the first claim of each process, and five runs claiming a fresh pool at
    once were seen to run three steps together (SQLite) before the pool settled at one slot.
    """
    instance.event_log_storage.set_concurrency_slots(pool_name, 1)
    info = instance.event_log_storage.get_concurrency_info(pool_name)
    assert (info.slot_count, info.limit, info.using_default_limit) == (1, 1, False), info


def _log_tail(work: Path, run_id: str) -> str:
    return (work / f"{run_id}.log").read_text(errors="replace")[-3000:]


def _claimed_by(instance: dg.DagsterInstance, pool_name: str) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info(pool_name)
    return [slot.run_id for slot in info.claimed_slots]


@pytest.fixture
def instance(platform_home: Path, postgres_url: str) -> Iterator[dg.DagsterInstance]:
    """Dagster's storage on Postgres, as the chart configures it, with the Helm values'
    concurrency and run monitoring settings."""
    config = {
        "storage": {"postgres": {"postgres_url": postgres_url}},
        **_instance_config(_helm_values()),
    }
    if config["run_monitoring"].get("free_slots_after_run_end_seconds"):
        # The deployment waits that many seconds after a run ends before freeing its slots;
        # the test waits one second, by the same code path.
        config["run_monitoring"]["free_slots_after_run_end_seconds"] = 1
    with instance_for_test(overrides=config) as instance:
        assert instance.event_log_storage.supports_global_concurrency_limits
        yield instance


@pytest.mark.slow
def test_one_training_step_holds_the_pool_at_a_time(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    pool_name = _platform_pool(tmp_path)
    _limit_to_one_slot(instance, pool_name)

    work = tmp_path / "work"
    work.mkdir()
    started = _start_runs(instance, pool_name, CONCURRENT_RUNS, work, hold=1.0)
    most_claimed = 0
    deadline = time.monotonic() + WAIT_SECONDS
    while any(p.poll() is None for _, p in started) and time.monotonic() < deadline:
        most_claimed = max(most_claimed, len(_claimed_by(instance, pool_name)))
        time.sleep(0.1)
    for run_id, process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.returncode == 0, f"run {run_id}: {_log_tail(work, run_id)}"

    runs = [instance.get_run_by_id(run_id) for run_id, _ in started]
    assert [r.status if r else None for r in runs] == [dg.DagsterRunStatus.SUCCESS] * len(runs)
    assert most_claimed <= 1
    intervals = sorted(
        (int((work / f"{run_id}.start").read_text()), int((work / f"{run_id}.end").read_text()))
        for run_id, _ in started
    )
    for (_, previous_end), (next_start, _) in itertools.pairwise(intervals):
        assert next_start >= previous_end, f"two training steps held {pool_name} at once"
    assert _claimed_by(instance, pool_name) == []


def test_the_slot_of_a_killed_run_is_freed(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    pool_name = pool(COMPUTE_PROFILES[GPU_PROFILE])
    assert pool_name is not None
    _limit_to_one_slot(instance, pool_name)
    work = tmp_path / "work"
    work.mkdir()
    ((run_id, process),) = _start_runs(instance, pool_name, 1, work, hold=WAIT_SECONDS)
    deadline = time.monotonic() + WAIT_SECONDS
    started = work / f"{run_id}.start"
    while not started.exists() and time.monotonic() < deadline:
        assert process.poll() is None, _log_tail(work, run_id)
        time.sleep(0.05)
    assert started.exists(), "the training step never started"
    assert _claimed_by(instance, pool_name) == [run_id]

    process.send_signal(signal.SIGKILL)
    process.wait()
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.STARTED
    # Killing the worker frees nothing: the slot stays claimed by the dead run.
    assert _claimed_by(instance, pool_name) == [run_id]

    # On Kubernetes run monitoring sees the run's Job failed (K8sRunLauncher
    # .check_run_worker_health) and calls report_run_failed; the local launcher cannot check
    # a worker's health, so the test makes that same call.
    instance.report_run_failed(run, "run worker killed (SIGKILL)")
    # Then the monitoring daemon's iteration (execute_concurrency_slots_iteration) frees the
    # slots of runs that ended more than free_slots_after_run_end_seconds ago.
    daemon = MonitoringDaemon(interval_seconds=1)
    deadline = time.monotonic() + FREE_WAIT_SECONDS
    with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as context:
        while _claimed_by(instance, pool_name) and time.monotonic() < deadline:
            list(daemon.run_iteration(context))
            time.sleep(0.2)
    assert _claimed_by(instance, pool_name) == [], (
        "the killed run still holds the pool's slot: deploy/helm/values.yaml must set "
        "dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSeconds"
    )
