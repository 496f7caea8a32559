"""Training on several GPUs of one machine: `train` run by torchrun, one process per GPU.

The platform calls `train_with_torchrun` when a compute profile has more than one GPU. It writes
a job file and starts

    python -m torch.distributed.run --standalone --nproc_per_node=N \
        -m ml_platform.training.distributed JOB

Every process runs this module's `main`: it reads the parquet splits and calls
`ml_platform.training.trainer.train`, whose `train_arrays` sees torchrun's environment and trains
with DistributedDataParallel (`ml_platform.training.ddp`). Rank 0 saves the model and a result
file, which the parent loads.

Like the rest of `ml_platform.training`, only torch and numpy are imported at module level.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist

from ml_platform.core.storage import read_parquet, write_atomically
from ml_platform.training.config import TrainingConfig
from ml_platform.training.model import TrainedModel
from ml_platform.training.modules import record_trained_architecture
from ml_platform.training.result import RESULT_FIELDS
from ml_platform.training.schema import FeatureSchema
from ml_platform.training.trainer import (
    TrainResult,
    check_serializable_params,
    train,
)

__all__ = [
    "DistributedTrainingError",
    "main",
    "nproc_for",
    "should_distribute",
    "train_with_torchrun",
]

JOB_FORMAT_VERSION = 1
RESULT_FILENAME = "result.json"
# Output lines kept for the error message when the run fails.
OUTPUT_TAIL_LINES = 40
# How often the parent looks for new epoch metrics while waiting for output.
EPOCH_POLL_SECONDS = 0.5

_LOGGER = logging.getLogger(__name__)


class DistributedTrainingError(RuntimeError):
    """A torchrun training run failed.

    Attributes:
        error_type: Name of the exception a worker raised (e.g. "ModelArchitectureError"), or None
            when no worker reported one (killed, out of memory, a hung collective).
        rank: Rank of the worker whose error is reported, or None.
        output_tail: The last lines torchrun and its workers printed.
    """

    def __init__(
        self, message: str, error_type: str | None, rank: int | None, output_tail: str
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.rank = rank
        self.output_tail = output_tail


def should_distribute(gpu_count: int) -> bool:
    """Whether a profile's GPUs call for torchrun: more than one, and all of them visible here.

    A profile of several MIG slices gives False: CUDA shows a process one MIG slice at most, so
    such a pod trains in one process.

    Args:
        gpu_count: GPUs the compute profile requests.
    """
    return gpu_count > 1 and torch.cuda.is_available() and torch.cuda.device_count() >= gpu_count


def nproc_for(gpu_count: int) -> int:
    """Processes to start for a profile: one per GPU when `should_distribute`, else 1.

    Args:
        gpu_count: GPUs the compute profile requests.
    """
    return gpu_count if should_distribute(gpu_count) else 1


def train_with_torchrun(
    train_path: str,
    validation_path: str,
    schema: FeatureSchema,
    architecture: str,
    model_params: dict[str, Any],
    config: TrainingConfig,
    nproc: int,
    output_dir: str,
    checkpoint_dir: str | None = None,
    log: Callable[[str], None] | None = None,
    epoch_log_path: str | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Trains like `ml_platform.training.trainer.train`, in `nproc` torchrun processes with DDP.

    `config.batch_size` is the global batch: each process takes batch_size // nproc rows per step
    and DDP averages the gradients, so the learning rate means what it means in one process.

    Args:
        train_path: Parquet file (path or fsspec URL) of the training split.
        validation_path: Parquet file of the validation split.
        schema: Columns and task.
        architecture: "mlp" or "package.module:ClassName", importable in the workers (they start
            in this process's working directory, which is put on their PYTHONPATH).
        model_params: Params for the architecture; must be JSON-serializable.
        config: Training settings; device "auto" or "cuda" gives each process its own GPU.
        nproc: Processes to start, one per GPU (see `nproc_for`).
        output_dir: Rank 0 writes model.safetensors, model.json and result.json here.
        checkpoint_dir: Where `last.pt` is kept to resume an interrupted run; a directory all
            processes see. Resuming needs the same `nproc`; with another, training restarts.
        log: Receives torchrun's and rank 0's output lines; defaults to this module's logger.
        epoch_log_path: Rank 0 appends each epoch's metrics here as a JSON line.
        on_epoch_end: Called here with (epoch, metrics) for each epoch rank 0 finishes, while
            training runs (e.g. to log metrics to MLflow).

    Returns:
        The trained model, loaded from `output_dir`, with the run's history and facts.

    Raises:
        DistributedTrainingError: torchrun or a worker failed; the message carries the worker's
            error and the last output lines.
        ValueError: nproc is below 1.
        ModelArchitectureError: model_params are not JSON-serializable.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    check_serializable_params(model_params)
    log = log or _LOGGER.info
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    # A stale result must never pass for this run's.
    (output / RESULT_FILENAME).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ml-platform-torchrun-") as job_dir:
        epochs_path = Path(epoch_log_path or Path(job_dir) / "epochs.jsonl")
        epochs_path.parent.mkdir(parents=True, exist_ok=True)
        job = {
            "format_version": JOB_FORMAT_VERSION,
            "train_path": train_path,
            "validation_path": validation_path,
            "schema": schema.to_dict(),
            "architecture": architecture,
            "model_params": model_params,
            "config": dataclasses.asdict(config),
            "output_dir": str(output.resolve()),
            "checkpoint_dir": checkpoint_dir,
            "epoch_log_path": str(epochs_path.resolve())
            if epoch_log_path or on_epoch_end
            else None,
            "error_dir": job_dir,
        }
        job_path = Path(job_dir) / "job.json"
        job_path.write_text(json.dumps(job, indent=2))
        command = _torchrun_command(nproc, job_path)
        log(f"starting {nproc} training processes: {' '.join(command)}")
        epochs = _EpochForwarder(epochs_path, on_epoch_end)
        returncode, tail = _run_streaming(command, _worker_environment(nproc), log, epochs.poll)
        epochs.poll()
        if returncode != 0:
            raise _failure(Path(job_dir), returncode, nproc, tail)
    # The workers built the network from the (trusted) spec: this process may load it.
    record_trained_architecture(architecture)
    return _load_result(output, tail)


def _torchrun_command(nproc: int, job_path: Path) -> list[str]:
    """Starts `nproc` processes of this module's `main` on one machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "ml_platform.training.distributed",
        str(job_path),
    ]


def _load_result(output: Path, tail: str) -> TrainResult:
    """Loads the model and the result file rank 0 wrote to `output`."""
    result_path = output / RESULT_FILENAME
    if not result_path.exists():
        raise DistributedTrainingError(
            f"torchrun exited cleanly but rank 0 wrote no {result_path}", None, None, tail
        )
    result = json.loads(result_path.read_text())
    return TrainResult(
        model=TrainedModel.load(output), **{name: result[name] for name in RESULT_FIELDS}
    )


def _worker_environment(nproc: int) -> dict[str, str]:
    environment = dict(os.environ)
    # Lines reach the log as they are printed, not when a buffer fills.
    environment["PYTHONUNBUFFERED"] = "1"
    # Architectures importable here ("tests.custom:Net" from the working directory) are there too.
    paths = [os.getcwd(), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    # torchrun would set 1 and warn; share the cores between the processes instead.
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return environment


class _EpochForwarder:
    """Passes new lines of rank 0's epoch log to `on_epoch_end`, in the parent process."""

    def __init__(
        self, path: Path, on_epoch_end: Callable[[int, dict[str, float]], None] | None
    ) -> None:
        self.path = path
        self.on_epoch_end = on_epoch_end
        # Lines from earlier runs appended to the same file were forwarded by those runs.
        self.offset = path.stat().st_size if path.exists() else 0

    def poll(self) -> None:
        if self.on_epoch_end is None or not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        # Only whole lines: the writer may be halfway through one.
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            if line.strip():
                metrics = json.loads(line)
                self.on_epoch_end(int(metrics["epoch"]), metrics)


def _run_streaming(
    command: Sequence[str],
    environment: dict[str, str],
    log: Callable[[str], None],
    idle: Callable[[], None],
) -> tuple[int, str]:
    """Runs `command`, passing each output line to `log` and calling `idle` between lines.

    Both callbacks run in this thread. Returns the exit status and the last output lines.
    """
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=environment,
        text=True,
        errors="replace",
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, name="torchrun-output", daemon=True)
    reader.start()
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    try:
        while True:
            try:
                line = lines.get(timeout=EPOCH_POLL_SECONDS)
            except queue.Empty:
                idle()
                continue
            if line is None:
                break
            tail.append(line)
            log(line)
            idle()
        returncode = process.wait()
    finally:
        if process.poll() is None:
            # Interrupted (e.g. the run was cancelled): torchrun stops its workers on SIGTERM.
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    reader.join(timeout=5)
    return returncode, "\n".join(tail)


def _failure(job_dir: Path, returncode: int, nproc: int, tail: str) -> DistributedTrainingError:
    """Builds the error for a failed run from the first worker error reported, if any.

    The first one is the cause: the others are often its echo (a peer that vanished mid-step).
    """
    reports = []
    for path in job_dir.glob("error-rank*.json"):
        with contextlib.suppress(ValueError, OSError):
            reports.append(json.loads(path.read_text()))
    output = f"\n\nlast output lines:\n{tail}" if tail else ""
    if not reports:
        return DistributedTrainingError(
            f"distributed training over {nproc} processes failed: torchrun exited with status "
            f"{returncode} and no worker reported an error (killed, out of memory or hung?)"
            f"{output}",
            None,
            None,
            tail,
        )
    report = min(reports, key=lambda item: (item["time"], item["rank"]))
    return DistributedTrainingError(
        f"distributed training over {nproc} processes failed on rank {report['rank']}: "
        f"{report['type']}: {report['message']}\n\nrank {report['rank']}'s traceback:\n"
        f"{report['traceback'].rstrip()}{output}",
        report["type"],
        report["rank"],
        tail,
    )


def _append_line(path: Path, metrics: dict[str, float]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(metrics) + "\n")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2)
    write_atomically(path, lambda temporary: temporary.write_text(text))


def _print_line(line: str) -> None:
    # The parent reads the workers' stdout line by line (see `_run_streaming`).
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _run_worker(job: dict[str, Any], rank: int) -> None:
    if job.get("format_version") != JOB_FORMAT_VERSION:
        raise ValueError(f"job format_version {job.get('format_version')!r} is not supported")
    config = TrainingConfig(**job["config"])
    train_frame = read_parquet(job["train_path"])
    validation_frame = read_parquet(job["validation_path"])
    epoch_log = Path(job["epoch_log_path"]) if job["epoch_log_path"] else None
    # train() fits the preprocessor on every rank (deterministic, so all agree) and seeds the
    # initial weights; train_arrays trains under DDP and calls back on rank 0 only.
    result = train(
        train_frame,
        validation_frame,
        FeatureSchema.from_dict(job["schema"]),
        job["architecture"],
        job["model_params"],
        config,
        checkpoint_dir=job["checkpoint_dir"],
        on_epoch_end=(lambda _, metrics: _append_line(epoch_log, metrics)) if epoch_log else None,
        log=_print_line,
    )
    if rank != 0:
        return
    output = Path(job["output_dir"])
    result.model.save(output)
    facts = {name: getattr(result, name) for name in RESULT_FIELDS}
    facts["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    _write_json(output / RESULT_FILENAME, facts)
    _print_line(f"rank 0 saved the model to {output}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one torchrun worker: `python -m ml_platform.training.distributed JOB_FILE`.

    Args:
        argv: The job file written by `train_with_torchrun`; defaults to sys.argv[1:].

    Returns:
        0 on success; failures raise after reporting the error for the parent.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        raise SystemExit("usage: python -m ml_platform.training.distributed JOB_FILE")
    job = json.loads(Path(arguments[0]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    try:
        _run_worker(job, rank)
    except BaseException as error:
        report = {
            "time": time.time(),
            "rank": rank,
            "type": type(error).__name__,
            "message": str(error),
            "traceback": traceback.format_exc(),
        }
        with contextlib.suppress(OSError):
            _write_json(Path(job["error_dir"]) / f"error-rank{rank}.json", report)
        raise
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
