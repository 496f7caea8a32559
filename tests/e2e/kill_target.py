"""A run of the real training job for the kill tests, with probes that pause its model step.

``python -m tests.e2e.kill_target`` runs the ``loan_default_training`` job's ``model`` step on the
instance of ``DAGSTER_HOME`` (a subset of the job, as a UI materialization of one asset is). With
``ML_PLATFORM_EXECUTOR=multiprocess`` the step runs in its own process: the test kills that process,
not the run, and the run's executor retries the step as its ``RetryPolicy`` says.

The probes change no behaviour of the platform; they only report and wait. Each attempt of the
step writes ``attempt-<n>.pid`` (its process id) into ``ML_PLATFORM_TEST_KILL_DIR``. The first
attempt to reach the pause point writes ``paused-<point>`` (its process id) and sleeps until it is
killed:
- ``ML_PLATFORM_TEST_PAUSE_AT_EPOCH=N``: when epoch N's metrics are logged (its checkpoint is not
  written yet, so the checkpoint holds epoch N-1);
- ``ML_PLATFORM_TEST_PAUSE_AFTER_REGISTRATION=1``: right after ``ModelRegistry.log_model_version``
  returned, before the drift reference, the pointer and the audit entry are written.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KILL_DIR_ENV = "ML_PLATFORM_TEST_KILL_DIR"
PAUSE_AT_EPOCH_ENV = "ML_PLATFORM_TEST_PAUSE_AT_EPOCH"
PAUSE_AFTER_REGISTRATION_ENV = "ML_PLATFORM_TEST_PAUSE_AFTER_REGISTRATION"
MODEL_STEP = ("loan_default", "model")
# A paused step that nobody kills gives up, so that a failed test leaves no process behind.
PAUSE_SECONDS = 600


def training_job() -> dg.JobDefinition:
    from ml_platform.definitions import build_definitions

    if os.environ.get(KILL_DIR_ENV):
        _install_probes(Path(os.environ[KILL_DIR_ENV]))
    defs = build_definitions(PROJECT_ROOT, spec_path=os.environ["ML_PLATFORM_SPEC_PATH"])
    return defs.resolve_job_def("loan_default_training")


def _write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: the test polls for it."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.rename(path)


def _pause(work: Path, point: str) -> None:
    """The first time ``point`` is reached, report this process and wait to be killed."""
    marker = work / f"paused-{point}"
    if marker.exists():
        return
    _write(marker, str(os.getpid()))
    time.sleep(PAUSE_SECONDS)
    raise RuntimeError(f"the kill test never killed the step paused at {point}")


def _install_probes(work: Path) -> None:
    from ml_platform.lifecycle import train
    from ml_platform.registry.client import ModelRegistry
    from ml_platform.registry.runs import TrainingRun

    if getattr(train.train_model, "probed", False):
        return
    train_model = train.train_model

    @functools.wraps(train_model)
    def probed_train_model(*args: Any, **kwargs: Any) -> Any:
        attempt = len(list(work.glob("attempt-*.pid"))) + 1
        _write(work / f"attempt-{attempt}.pid", str(os.getpid()))
        return train_model(*args, **kwargs)

    probed_train_model.probed = True  # type: ignore[attr-defined]
    # The asset imports train_model when it runs, so it finds the probed one.
    train.train_model = probed_train_model

    if os.environ.get(PAUSE_AT_EPOCH_ENV):
        pause_epoch = int(os.environ[PAUSE_AT_EPOCH_ENV])
        log_epoch: Callable[..., None] = TrainingRun.log_epoch

        def probed_log_epoch(self: TrainingRun, epoch: int, metrics: dict[str, float]) -> None:
            log_epoch(self, epoch, metrics)
            if epoch == pause_epoch:
                _pause(work, "epoch")

        TrainingRun.log_epoch = probed_log_epoch  # type: ignore[method-assign]

    if os.environ.get(PAUSE_AFTER_REGISTRATION_ENV):
        log_model_version: Callable[..., str] = ModelRegistry.log_model_version

        def probed_log_model_version(self: ModelRegistry, *args: Any, **kwargs: Any) -> str:
            version = log_model_version(self, *args, **kwargs)
            _pause(work, "registration")
            return version

        ModelRegistry.log_model_version = probed_log_model_version  # type: ignore[method-assign]


if __name__ == "__main__":
    instance = dg.DagsterInstance.get()
    result = dg.execute_job(
        dg.reconstructable(training_job),
        instance=instance,
        asset_selection=[dg.AssetKey(list(MODEL_STEP))],
    )
    sys.exit(0 if result.success else 1)
