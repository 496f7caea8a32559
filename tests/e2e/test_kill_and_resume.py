"""A training step killed with SIGKILL is retried by the run's own executor, in the same run.

The mechanism is Dagster's, nothing is marked or re-executed by the test. The model step runs in
its own process (``ML_PLATFORM_EXECUTOR=multiprocess`` locally, a pod per step with
``k8s_job_executor``). The test SIGKILLs that process, not the run worker. Dagster 1.13.27's
multiprocess executor catches ``ChildProcessCrashException`` (dagster/_core/executor/
multiprocess.py:297) and calls ``Executor.log_failure_or_retry_event_after_error``
(dagster/_core/executor/base.py:82), which emits STEP_UP_FOR_RETRY while the step's
``RetryPolicy`` (assets/models.py: 2 retries, 30 s apart) has retries left. The step delegating
executor (``k8s_job_executor``) calls the same function when a step pod's Job failed its health
check, so a preempted step pod takes the same path.

Run monitoring does not apply here: the local ``DefaultRunLauncher`` does not support
``check_run_worker_health`` (dagster/_core/launcher/base.py), so ``monitor_started_run``
(dagster/_daemon/monitoring/run_monitoring.py) never looks at a local run worker. It applies to a
dead run worker on Kubernetes (``K8sRunLauncher``), where deploy/helm/values.yaml sets
``maxResumeRunAttempts: 0``: such a run is marked failed and not resumed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import torch

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import build_training_set
from ml_platform.features.store import apply_feature_repo
from ml_platform.lifecycle.records import current_model
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import TAG_DAGSTER_RUN
from ml_platform.spec.loading import load_project
from tests.e2e import kill_target, loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL_STEP = "__".join(kill_target.MODEL_STEP)
EPOCHS = 6
PAUSE_EPOCH = 3
# Asks the platform for a shorter delay between retries, where it reads one.
RETRY_DELAY_ENV = "ML_PLATFORM_RETRY_DELAY_SECONDS"
# Each wait covers a step process start (imports), training and the policy's retry delay.
WAIT_SECONDS = 300
RUN_WORKER_LOG = "run_worker.log"


RunStarter = Callable[[str, str], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class Platform:
    settings: PlatformSettings
    registry: ModelRegistry
    audit: AuditLog
    work: Path


@pytest.fixture
def platform(platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """The loans model with its training set built, a torch model that trains epoch by epoch."""
    spec_dir = loans.write_specs(
        tmp_path / "specs",
        training={
            "epochs": EPOCHS,
            "batch_size": 256,
            "learning_rate": 0.01,
            "early_stopping_patience": EPOCHS,
        },
    )
    monkeypatch.setenv("ML_PLATFORM_SPEC_PATH", str(spec_dir))
    monkeypatch.setenv("ML_PLATFORM_EXECUTOR", "multiprocess")
    monkeypatch.setenv(RETRY_DELAY_ENV, "1")
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    catalog = load_project(PROJECT_ROOT, str(spec_dir))
    apply_feature_repo(catalog.feature_repos["lending"], settings)
    _, report = build_training_set(
        catalog.models[loans.MODEL], catalog.resolved[loans.MODEL], catalog, settings
    )
    assert report.success, report.summary()
    Path(os.environ["DAGSTER_HOME"], "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    work = tmp_path / "kill"
    work.mkdir()
    monkeypatch.setenv(kill_target.KILL_DIR_ENV, str(work))
    return Platform(
        settings, ModelRegistry.for_settings(settings), AuditLog(settings.audit_url), work
    )


@pytest.fixture
def start_run(platform: Platform) -> Iterator[RunStarter]:
    """Starts the run worker, in a process group of its own that a failed test leaves killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(pause_env: str, pause_value: str) -> subprocess.Popen[bytes]:
        with open(platform.work / RUN_WORKER_LOG, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.kill_target"],
                cwd=PROJECT_ROOT,
                env={**os.environ, pause_env: pause_value},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        # The group outlives its leader when a paused step process is left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _checkpoint_epoch(settings: PlatformSettings) -> int:
    [checkpoint] = Path(settings.checkpoint_root, loans.MODEL).glob("*/last.pt")
    return int(torch.load(checkpoint, weights_only=True)["epoch"])


def _paused_step(point: str, platform: Platform, run_worker: subprocess.Popen[bytes]) -> int:
    """The process id of the model step once it is paused at ``point``."""
    marker = platform.work / f"paused-{point}"
    deadline = time.monotonic() + WAIT_SECONDS
    while not marker.exists():
        assert run_worker.poll() is None, f"the run ended before its step reached {point}"
        assert time.monotonic() < deadline, f"the step did not reach {point}"
        time.sleep(0.2)
    step_pid = int(marker.read_text())
    assert step_pid != run_worker.pid  # the step's own process, not the run worker
    assert _attempts(platform) == [step_pid]
    return step_pid


def _attempts(platform: Platform) -> list[int]:
    """The process id of each attempt of the model step, in order."""
    count = len(list(platform.work.glob("attempt-*.pid")))
    return [int((platform.work / f"attempt-{n}.pid").read_text()) for n in range(1, count + 1)]


def _finished_run(run_worker: subprocess.Popen[bytes], platform: Platform) -> dg.DagsterRun:
    """The one run of the instance, once its worker exited: the retry made no other run."""
    exit_code = run_worker.wait(timeout=WAIT_SECONDS)
    assert exit_code == 0, (platform.work / RUN_WORKER_LOG).read_text()[-4000:]
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
    return run


def _model_step_events(run_id: str) -> list[str]:
    """The event types of the model step, in order."""
    with dg.DagsterInstance.get() as instance:
        return [
            event.dagster_event.event_type_value
            for event in instance.all_logs(run_id)
            if event.dagster_event is not None and event.dagster_event.step_key == MODEL_STEP
        ]


def _messages(run_id: str) -> list[str]:
    with dg.DagsterInstance.get() as instance:
        return [event.user_message for event in instance.all_logs(run_id)]


def _model_metadata(run_id: str) -> dict[str, object]:
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(list(kill_target.MODEL_STEP)))
    assert event is not None and event.asset_materialization is not None
    assert event.run_id == run_id
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def _assert_retried_once_in_the_same_run(run: dg.DagsterRun, platform: Platform) -> None:
    """The killed step was retried once, by the run's executor, in another process."""
    assert run.status == dg.DagsterRunStatus.SUCCESS
    events = _model_step_events(run.run_id)
    assert events.count("STEP_START") == 1
    assert events.count("STEP_UP_FOR_RETRY") == 1
    assert events.count("STEP_RESTARTED") == 1
    assert events.count("STEP_SUCCESS") == 1
    assert "STEP_FAILURE" not in events
    assert any(
        f"child process for step {MODEL_STEP}" in message for message in _messages(run.run_id)
    )
    first, second = _attempts(platform)
    assert first != second


def _assert_one_version_trained_by(run: dg.DagsterRun, platform: Platform) -> None:
    """One registered version, named by the pointer and by the one "trained" audit entry."""
    assert platform.registry.registered_versions(loans.MODEL) == ["1"]
    assert platform.registry.version_tags(loans.MODEL, "1")[TAG_DAGSTER_RUN] == run.run_id
    assert current_model(platform.settings, loans.MODEL).version == "1"
    [trained] = platform.audit.events(loans.MODEL, "trained")
    assert (trained.model_version, trained.dagster_run_id) == ("1", run.run_id)
    assert list(Path(platform.settings.checkpoint_root, loans.MODEL).glob("*/last.pt")) == []


@pytest.mark.slow
def test_a_step_killed_mid_training_is_retried_by_its_policy_and_resumes(
    platform: Platform, start_run: RunStarter
) -> None:
    run_worker = start_run(kill_target.PAUSE_AT_EPOCH_ENV, str(PAUSE_EPOCH))
    step_pid = _paused_step("epoch", platform, run_worker)
    # Epoch PAUSE_EPOCH ended, its checkpoint is not written: the last one is of the epoch before.
    killed_at = _checkpoint_epoch(platform.settings)
    assert killed_at == PAUSE_EPOCH - 1
    os.kill(step_pid, signal.SIGKILL)

    run = _finished_run(run_worker, platform)

    _assert_retried_once_in_the_same_run(run, platform)
    metadata = _model_metadata(run.run_id)
    assert metadata["resumed_from_epoch"] == killed_at
    assert metadata["epochs_run"] == EPOCHS
    assert any("resuming from checkpoint at epoch" in m for m in _messages(run.run_id))
    _assert_one_version_trained_by(run, platform)


@pytest.mark.slow
def test_a_step_killed_right_after_registering_reuses_its_version_on_retry(
    platform: Platform, start_run: RunStarter
) -> None:
    run_worker = start_run(kill_target.PAUSE_AFTER_REGISTRATION_ENV, "1")
    step_pid = _paused_step("registration", platform, run_worker)
    # Killed between the registration and the pointer and audit entry that follow it.
    assert platform.registry.registered_versions(loans.MODEL) == ["1"]
    assert platform.audit.events(loans.MODEL, "trained") == []
    os.kill(step_pid, signal.SIGKILL)

    run = _finished_run(run_worker, platform)

    _assert_retried_once_in_the_same_run(run, platform)
    _assert_one_version_trained_by(run, platform)
    assert _model_metadata(run.run_id)["model_version"] == "1"
    assert any(
        "was registered by an earlier attempt of this run: reusing it" in m
        for m in _messages(run.run_id)
    )
