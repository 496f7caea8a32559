"""The training loop on in-memory arrays: `train_arrays`, in one process or under torchrun.

`train_arrays` runs in phases that share two small records: `_set_up` builds the `_Run` (device,
tensors, optimizer, batch sources), `_resume` restores the `TrainingProgress` of a matching
checkpoint, `_prepare_forward` wraps the module for DDP and torch.compile, then each epoch runs
`_train_epoch` and `_write_checkpoint`, and `_finish` returns the best weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ml_platform.core.tasks import Task
from ml_platform.training.batching import (
    BatchSource,
    as_tensor,
    evaluate,
    place_data,
    prepare_labels,
    validate_arrays,
)
from ml_platform.training.budget import TrainingBudgetExceeded, budget_exhausted
from ml_platform.training.checkpoint import (
    CHECKPOINT_FILENAME,
    TrainingProgress,
    TrainingState,
    checkpoint_payload,
    fingerprint_fields,
    fingerprint_of,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from ml_platform.training.config import (
    TrainingConfig,
    autocast_factory,
    make_losses,
    make_optimizer,
    seed_everything,
)
from ml_platform.training.ddp import (
    DdpContext,
    barrier,
    contiguous_share,
    ddp_context,
    ddp_device,
    join_process_group,
    require_same_resume,
    shard_indices,
)
from ml_platform.training.modules import check_output_shape
from ml_platform.training.progress import progress_suffix
from ml_platform.training.result import TrainingFacts
from ml_platform.training.schema import TrainingDivergedError

# Evaluation holds no activations for backward, so it can use larger batches than training.
MIN_EVAL_BATCH_SIZE = 8192

_LOGGER = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ArrayTrainResult(TrainingFacts):
    """What `train_arrays` returns: the facts of the run and the trained module.

    Attributes:
        module: The module with the best validation-loss weights, on CPU, in eval mode.
    """

    module: nn.Module


@dataclass
class _Run:
    """What `_set_up` prepares once and every epoch uses."""

    config: TrainingConfig
    task: Task
    device: torch.device
    ddp: DdpContext | None
    log: Callable[[str], None]
    on_epoch_end: Callable[[int, dict[str, float]], None] | None
    # Maps the validation outputs (whole split, in order) to extra metrics, e.g. val_roc_auc.
    score_validation: Callable[[np.ndarray], dict[str, float]] | None
    module: nn.Module
    loss_fn: nn.Module
    loss_sum_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    train_source: BatchSource
    val_source: BatchSource
    generator: torch.Generator
    # Rows per optimizer step in this process: batch_size // world_size under torchrun.
    batch_size: int
    validation_rows: int
    checkpoint_path: Path | None
    fields: dict[str, Any]
    fingerprint: str
    # Set by `_prepare_forward`: the DDP wrapper (or the module) and what the steps call.
    trained: nn.Module | None = None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    compile_pending: bool = False
    # Set when the epochs start: the wall clock and first epoch of this call, for the ETA.
    clock_started: float = 0.0
    first_epoch: int = 1

    @property
    def local_rows(self) -> int:
        """Rows each process trains on per epoch: all of them, or an equal shard."""
        rows = self.train_source.rows
        return rows if self.ddp is None else -(-rows // self.ddp.world_size)

    @property
    def epoch_rows(self) -> int:
        """Rows all processes together train on per epoch."""
        rows = self.train_source.rows
        return rows if self.ddp is None else self.local_rows * self.ddp.world_size


def train_arrays(
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    x_val: np.ndarray | torch.Tensor,
    y_val: np.ndarray | torch.Tensor,
    task: Task,
    module: nn.Module,
    config: TrainingConfig,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
    score_validation: Callable[[np.ndarray], dict[str, float]] | None = None,
) -> ArrayTrainResult:
    """Trains a module on in-memory arrays: the core loop behind `train`.

    Each split becomes one tensor; every epoch shuffles with a seeded `torch.randperm` and slices
    batches out of it. The weights with the lowest validation loss are returned.

    Started by torchrun with WORLD_SIZE > 1, it trains with DistributedDataParallel: process
    LOCAL_RANK uses `cuda:LOCAL_RANK` (or the CPU when the config's device is "cpu") and joins the
    default process group (NCCL on CUDA, Gloo on CPU) unless the caller already did. Every
    process gets the full arrays; each epoch all draw the same permutation and train on their
    `shard_indices` of it with `batch_size // world_size` rows per step, so `batch_size` stays the
    global batch and `learning_rate` needs no scaling. Validation is split between the processes
    and its sums all-reduced, so all take the same early-stopping decision. Only rank 0 logs,
    calls `on_epoch_end` and writes the checkpoint, which every process resumes from; a
    checkpoint written with another number of processes is not resumed (the log says so). Every
    process returns the unwrapped module with the best weights.

    Args:
        x_train: float features (N, D).
        y_train: Labels (N,): 0/1 for binary, class indices for multiclass, targets for
            regression.
        x_val: Validation features (M, D).
        y_val: Validation labels (M,).
        task: What the module predicts; picks BCEWithLogits, CrossEntropy or MSE loss.
        module: The network; its output must be (N, 1) or (N,), or (N, C) for multiclass.
        config: Training settings.
        checkpoint_dir: When set, `last.pt` there is rewritten after every epoch and a
            matching one is resumed from on start. Under torchrun, a directory all processes see.
        on_epoch_end: Called with (epoch, metrics) after each epoch, before the checkpoint is
            written, so a failing callback repeats that epoch on resume rather than losing it.
        log: Receives progress lines (one per epoch, with throughput and ETA); defaults to
            this module's logger.
        score_validation: Called on the main process after each epoch's validation with the
            module's float outputs on the whole validation split, in order ((M,) logits or
            standardized values, (M, C) logits for multiclass); the metrics it returns (e.g.
            ``val_roc_auc``) join the epoch's history. Under torchrun the outputs of every
            process are gathered first.

    Returns:
        The best module (on CPU, eval mode), per-epoch history and run facts. Under torchrun,
        samples_per_second counts the rows of all processes.

    Raises:
        TrainingDataError: The arrays are empty, mis-shaped, non-finite or have one class.
        ModelArchitectureError: The module's output shape does not fit the task.
        TrainingDivergedError: The validation loss became NaN or infinite.
        TrainingBudgetExceeded: ``config.max_seconds`` passed (counted from
            ``config.started_at``) with epochs left; the checkpoint of the last epoch is kept.
        ValueError: Under torchrun, batch_size is below the number of processes or a process
            has no GPU of its own.
    """
    arrays = (x_train, y_train, x_val, y_val)
    run = _set_up(arrays, task, module, config, checkpoint_dir, on_epoch_end, log)
    run.score_validation = score_validation
    progress = _resume(run)
    _prepare_forward(run, progress)
    _announce(run, progress)
    # Rows per batch, to weigh the per-batch mean losses into the epoch's mean.
    batch_rows = torch.tensor(
        [
            min(run.batch_size, run.local_rows - start)
            for start in range(0, run.local_rows, run.batch_size)
        ],
        dtype=torch.float64,
        device=run.device,
    )
    started_at = config.started_at if config.started_at is not None else time.time()
    run.clock_started, run.first_epoch = time.perf_counter(), progress.start_epoch
    for epoch in range(progress.start_epoch, config.epochs + 1):
        if progress.stopped_early:
            break
        _train_epoch(run, progress, epoch, batch_rows)
        if run.checkpoint_path is not None:
            _write_checkpoint(run, progress, epoch)
        if epoch < config.epochs and not progress.stopped_early:
            _check_budget(run, started_at, epoch)
    return _finish(run, progress)


def _check_budget(run: _Run, started_at: float, epoch: int) -> None:
    """Stops after this epoch's checkpoint once the budget is spent; all processes agree.

    Checked per epoch, not per batch: the checkpoint is per epoch, so a stop mid-epoch would
    throw that epoch's work away, and under DDP a per-batch agreement would cost a collective
    per step.
    """
    spent = budget_exhausted(run.config.max_seconds, started_at)
    if run.ddp is not None:
        # Clocks differ between processes: rank 0's decision would leave the others waiting
        # in the next collective, so any process that sees the budget spent stops them all.
        flag = torch.tensor([1.0 if spent else 0.0], device=run.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        spent = bool(flag.item())
    if spent and run.config.max_seconds is not None:
        raise TrainingBudgetExceeded(
            max_seconds=run.config.max_seconds,
            elapsed_seconds=time.time() - started_at,
            completed=epoch,
            total=run.config.epochs,
            unit="epoch",
        )


def _ignore_line(line: str) -> None:
    del line


def _set_up(
    arrays: tuple[np.ndarray | torch.Tensor, ...],
    task: Task,
    module: nn.Module,
    config: TrainingConfig,
    checkpoint_dir: str | Path | None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    log: Callable[[str], None] | None,
) -> _Run:
    """Checks the arrays and the module, then builds everything the epochs use."""
    ddp = ddp_context()
    log = log or _LOGGER.info
    if ddp is not None and not ddp.is_main:
        # One voice per run: the other processes compute the same figures.
        log, on_epoch_end = _ignore_line, None
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device, batch_size = ddp_device(config, ddp, log)
    train_x = as_tensor(arrays[0], torch.float32, "x_train")
    val_x = as_tensor(arrays[2], torch.float32, "x_validation")
    train_y = prepare_labels(arrays[1], task, "y_train")
    val_y = prepare_labels(arrays[3], task, "y_validation")
    validate_arrays(train_x, train_y, val_x, val_y, task)
    if ddp is not None:
        join_process_group(device)

    seed_everything(config.seed)
    module.to(device)
    module.train()
    check_output_shape(module, train_x[:2].to(device), train_y, task)
    tensors = {"x_train": train_x, "y_train": train_y, "x_val": val_x, "y_val": val_y}
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILENAME if checkpoint_dir else None
    # Hashing the data costs a pass over it, so only runs that checkpoint pay for it.
    fields = fingerprint_fields(config, task, module, tensors) if checkpoint_path else {}
    if checkpoint_path and ddp is not None:
        # Shards and per-process batches depend on it; single-process fingerprints are unchanged.
        fields["world_size"] = ddp.world_size
    validation_rows = val_x.shape[0]
    # Every process keeps all training rows (each epoch's shard is a new draw from all of them)
    # but only its share of the validation rows.
    if ddp is not None:
        share = contiguous_share(val_x.shape[0], ddp.rank, ddp.world_size)
        val_x, val_y = val_x[share], val_y[share]
    loss_fn, loss_sum_fn = make_losses(task, config, device)
    optimizer = make_optimizer(module, config, device)
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    on_device = place_data(config, device, [train_x, train_y, val_x, val_y], log)
    # Shuffle where the data lives: a CPU randperm of millions of rows plus its copy to the GPU
    # cost more per epoch than the whole epoch of a small model (measured on an H100: 0.42x).
    # Under torchrun every process draws the same permutation and takes its shard of it.
    generator = torch.Generator(device=device if on_device else "cpu")
    generator.manual_seed(config.seed)
    return _Run(
        config=config,
        task=task,
        device=device,
        ddp=ddp,
        log=log,
        on_epoch_end=on_epoch_end,
        score_validation=None,
        module=module,
        loss_fn=loss_fn,
        loss_sum_fn=loss_sum_fn,
        optimizer=optimizer,
        scaler=scaler,
        autocast=autocast_factory(device, config.precision),
        train_source=BatchSource(train_x, train_y, device, on_device),
        val_source=BatchSource(val_x, val_y, device, on_device),
        generator=generator,
        batch_size=batch_size,
        validation_rows=validation_rows,
        checkpoint_path=checkpoint_path,
        fields=fields,
        fingerprint=fingerprint_of(fields),
    )


def _resume(run: _Run) -> TrainingProgress:
    """Restores the module, optimizer, random streams and progress from a matching checkpoint."""
    if run.checkpoint_path is None:
        return TrainingProgress()
    checkpoint = load_checkpoint(run.checkpoint_path, run.fingerprint, run.fields, run.log)
    if checkpoint is None:
        return TrainingProgress()
    return restore_checkpoint(
        checkpoint,
        state=_state(run),
        seed=run.config.seed,
        device=run.device,
        rank=run.ddp.rank if run.ddp is not None else None,
        log=run.log,
    )


def _state(run: _Run) -> TrainingState:
    """The part of the run a checkpoint saves and restores."""
    return TrainingState(run.module, run.optimizer, run.scaler, run.generator)


def _prepare_forward(run: _Run, progress: TrainingProgress) -> None:
    """Wraps the module in DistributedDataParallel under torchrun, then tries torch.compile."""
    trained: nn.Module = run.module
    if run.ddp is not None:
        require_same_resume(
            progress.resumed_from, run.device, run.ddp.world_size, run.checkpoint_path
        )
        # DDP copies rank 0's weights to the other processes here and averages gradients in
        # backward; a global batch of `batch_size` rows thus takes the same step as one process.
        trained = DistributedDataParallel(
            run.module, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
        if progress.resumed_from is None:
            # Distinct dropout masks per process; the shuffle has its own, shared generator.
            torch.manual_seed(run.config.seed + run.ddp.rank)
    run.trained = run.forward = trained
    if run.config.compile:
        try:
            run.forward = torch.compile(trained)
            run.compile_pending = True
        except Exception as error:  # compile is an optimization, never required
            run.log(
                f"torch.compile unavailable ({type(error).__name__}: {error}); training eagerly"
            )


def _announce(run: _Run, progress: TrainingProgress) -> None:
    """Logs what is about to be trained, or that the resumed run is already complete."""
    config = run.config
    if progress.stopped_early or progress.start_epoch > config.epochs:
        run.log(
            f"the checkpoint's run is complete ({len(progress.history)} epochs); "
            f"nothing left to train"
        )
        return
    run.log(
        f"training on {run.device} ({config.precision}, data "
        f"{'on the device' if run.train_source.on_device else 'in pinned host memory'}): "
        f"{run.train_source.rows} train rows, {run.validation_rows} validation rows, "
        f"{run.train_source.x.shape[1]} features, epochs {progress.start_epoch}..{config.epochs}"
    )
    if run.ddp is not None:
        run.log(
            f"DistributedDataParallel over {run.ddp.world_size} processes: "
            f"{run.batch_size} rows per process per step, a global batch of "
            f"{run.batch_size * run.ddp.world_size} (batch_size {config.batch_size}), "
            f"{run.local_rows} rows per process per epoch"
        )


def _step(run: _Run, batch_x: torch.Tensor, batch_y: torch.Tensor) -> torch.Tensor:
    """One optimizer step on one batch; returns the batch's mean loss, still on the device."""
    assert run.forward is not None, "_prepare_forward runs before the first step"
    with run.autocast():
        output = run.forward(batch_x)
        if run.task != "multiclass_classification":
            output = output.reshape(-1)
        loss = run.loss_fn(output, batch_y)
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    return loss.detach()


def _first_step(run: _Run, batch_x: torch.Tensor, batch_y: torch.Tensor) -> torch.Tensor:
    """A step that falls back to eager training when the compiled module fails."""
    run.compile_pending = False
    try:
        return _step(run, batch_x, batch_y)
    # torch.compile compiles lazily, so its failures surface on the first step.
    except Exception as error:
        run.log(f"torch.compile failed ({type(error).__name__}: {error}); training eagerly")
        run.forward = run.trained
        return _step(run, batch_x, batch_y)


def _train_epoch(
    run: _Run, progress: TrainingProgress, epoch: int, batch_rows: torch.Tensor
) -> None:
    """Trains one epoch, evaluates it and records the result in `progress`."""
    started = time.perf_counter()
    generator = run.generator
    permutation = torch.randperm(
        run.train_source.rows, generator=generator, device=generator.device
    )
    if run.ddp is not None:
        permutation = shard_indices(permutation, run.ddp.rank, run.ddp.world_size)
    # Losses stay on the device until the epoch ends: no host sync, no extra kernel per batch.
    losses: list[torch.Tensor] = []
    for batch_x, batch_y in run.train_source.shuffled(permutation, run.batch_size):
        step = _first_step if run.compile_pending else _step
        losses.append(step(run, batch_x, batch_y))
    loss_sum = (torch.stack(losses).double() * batch_rows).sum()
    if run.ddp is not None:
        dist.all_reduce(loss_sum)
    train_loss = float(loss_sum.item()) / run.epoch_rows
    epoch_seconds = time.perf_counter() - started
    progress.train_seconds += epoch_seconds
    progress.samples += run.epoch_rows

    outputs: list[torch.Tensor] | None = [] if run.score_validation is not None else None
    validation_loss, validation_accuracy = evaluate(
        run.module,
        run.val_source,
        run.loss_sum_fn,
        run.task,
        run.autocast,
        max(run.config.batch_size, MIN_EVAL_BATCH_SIZE),
        run.device,
        across_processes=run.ddp is not None,
        outputs=outputs,
    )
    if not math.isfinite(validation_loss):
        raise TrainingDivergedError(
            f"validation loss is {validation_loss} at epoch {epoch} (train loss {train_loss}); "
            f"lower learning_rate or use precision fp32"
        )
    metrics: dict[str, float] = {
        "epoch": float(epoch),
        "train_loss": train_loss,
        "validation_loss": validation_loss,
    }
    if validation_accuracy is not None:
        metrics["validation_accuracy"] = validation_accuracy
    if outputs is not None:
        metrics.update(_score_validation(run, outputs))
    _record_epoch(run, progress, epoch, metrics, run.epoch_rows / max(epoch_seconds, 1e-9))


def _score_validation(run: _Run, outputs: list[torch.Tensor]) -> dict[str, float]:
    """The extra validation metrics of the epoch, on the main process (empty on the others)."""
    assert run.score_validation is not None
    mine = torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0,), dtype=np.float32)
    if run.ddp is not None:
        # Each process evaluated a contiguous share of the rows: in rank order, the whole split.
        shares: list[Any] = [None] * run.ddp.world_size
        dist.all_gather_object(shares, mine)
        if not run.ddp.is_main:
            return {}
        mine = np.concatenate(shares)
    return run.score_validation(mine)


def _record_epoch(
    run: _Run,
    progress: TrainingProgress,
    epoch: int,
    metrics: dict[str, float],
    rows_per_second: float,
) -> None:
    """Records the epoch in `progress`, applies early stopping, logs and calls `on_epoch_end`."""
    improved = progress.record(epoch, metrics, run.module)
    patience = run.config.early_stopping_patience
    stopping = patience > 0 and progress.epochs_without_improvement >= patience
    remaining = 0 if stopping else run.config.epochs - epoch
    done = epoch - run.first_epoch + 1
    run.log(
        f"epoch {epoch}/{run.config.epochs}: "
        + " ".join(f"{key}={value:.6g}" for key, value in metrics.items() if key != "epoch")
        + (" (best)" if improved else "")
        + "; "
        + progress_suffix(rows_per_second, time.perf_counter() - run.clock_started, done, remaining)
    )
    if stopping:
        progress.stopped_early = True
        run.log(
            f"early stopping after epoch {epoch}: validation_loss has not improved for "
            f"{patience} epochs (best {progress.best_loss:.6g} at epoch {progress.best_epoch})"
        )
    if run.on_epoch_end is not None:
        run.on_epoch_end(epoch, dict(metrics))


def _write_checkpoint(run: _Run, progress: TrainingProgress, epoch: int) -> None:
    """Rank 0 writes `last.pt` with everything `_resume` restores; the others wait for it."""
    assert run.checkpoint_path is not None
    device = run.device
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    rank_rng: list[Any] | None = None
    if run.ddp is not None:
        # Each process's own random state, so dropout repeats exactly after a resume.
        rank_rng = [None] * run.ddp.world_size
        dist.all_gather_object(rank_rng, [torch.get_rng_state(), cuda_rng])
    if run.ddp is None or run.ddp.is_main:
        payload = checkpoint_payload(
            epoch=epoch,
            fingerprint=run.fingerprint,
            fields=run.fields,
            state=_state(run),
            progress=progress,
            cuda_rng=cuda_rng,
            rank_rng=rank_rng,
        )
        save_checkpoint(run.checkpoint_path, payload)
    if run.ddp is not None:
        # No process runs ahead of a checkpoint that is not yet on disk.
        barrier(device)


def _finish(run: _Run, progress: TrainingProgress) -> ArrayTrainResult:
    """Loads the best weights into the module, on the CPU in eval mode, and reports the run."""
    assert progress.best_state is not None, "at least one epoch ran or was resumed"
    module = run.module
    module.load_state_dict(progress.best_state)
    module.to("cpu")
    module.eval()
    seconds = progress.train_seconds
    return ArrayTrainResult(
        module=module,
        history=progress.history,
        best_epoch=progress.best_epoch,
        epochs_run=len(progress.history),
        resumed_from_epoch=progress.resumed_from,
        samples_per_second=progress.samples / seconds if seconds > 0 else 0.0,
        device=str(run.device),
        stopped_early=progress.stopped_early,
    )
