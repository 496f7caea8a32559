"""Checkpoints of a training run: written after every epoch, resumed only by the same run.

A checkpoint carries a fingerprint of what decides the training trajectory (data, module shape,
optimization settings); a run resumes from `last.pt` only when the fingerprints match.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ml_platform.core.storage import write_atomically
from ml_platform.core.tasks import Task
from ml_platform.training.config import TrainingConfig

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_FILENAME = "last.pt"
# Rows hashed into the checkpoint fingerprint: all of them up to this count, else an even sample.
FINGERPRINT_ROWS = 1_000_000


@dataclass
class TrainingProgress:
    """Where training stands: what a checkpoint keeps besides the weights, restored on resume.

    Attributes:
        history: One dict of metrics per completed epoch.
        best_loss: Lowest validation loss so far.
        best_epoch: Epoch of `best_loss`; 0 before the first epoch.
        best_state: The weights of `best_epoch`, on the CPU.
        epochs_without_improvement: Epochs since `best_epoch`, for early stopping.
        stopped_early: Whether early stopping ended training.
        resumed_from: Last completed epoch of the checkpoint resumed from, else None.
        train_seconds: Seconds of training steps in this call (not checkpointed).
        samples: Training rows processed in this call (not checkpointed).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None
    train_seconds: float = 0.0
    samples: int = 0

    @property
    def start_epoch(self) -> int:
        """The first epoch left to train."""
        return 1 if self.resumed_from is None else self.resumed_from + 1

    def record(self, epoch: int, metrics: dict[str, float], module: nn.Module) -> bool:
        """Adds an epoch's metrics, keeping the module's weights when they are the best so far.

        Args:
            epoch: The epoch just completed.
            metrics: Its metrics, validation_loss included.
            module: The network, with this epoch's weights.

        Returns:
            Whether the epoch improved on the best validation loss.
        """
        validation_loss = metrics["validation_loss"]
        improved = validation_loss < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = validation_loss, epoch
            self.best_state = cpu_state(module)
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        self.history.append(metrics)
        return improved


def _tensor_digest(tensor: torch.Tensor) -> str:
    rows = tensor.shape[0]
    if rows > FINGERPRINT_ROWS:
        index = torch.arange(FINGERPRINT_ROWS) * (rows - 1) // (FINGERPRINT_ROWS - 1)
        tensor = tensor.index_select(0, index.to(tensor.device))
    data = tensor.detach().cpu().contiguous().numpy()
    return hashlib.blake2b(data.data, digest_size=16).hexdigest()


def fingerprint_fields(
    config: TrainingConfig,
    task: Task,
    module: nn.Module,
    arrays: Mapping[str, torch.Tensor],
) -> dict[str, Any]:
    """What decides the training trajectory, and so whether a checkpoint may be resumed.

    Left out on purpose: `epochs` (resuming with more epochs extends a run), the early-stopping
    patience, device, data location, threads and compile (they change speed, not the
    optimization problem), and anything that differs between two attempts of the same run (paths,
    times, process ids, initial weights that the checkpoint replaces anyway).

    Args:
        config: Training settings.
        task: What the module predicts.
        module: The network (its class and parameter shapes count, not its weights).
        arrays: The splits by name; their shapes, dtypes and digests count.

    Returns:
        JSON-serializable fields, saved in the checkpoint to explain a mismatch.
    """
    fields: dict[str, Any] = {
        "task": task,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "seed": config.seed,
        "precision": config.precision,
        "positive_class_weight": config.positive_class_weight,
        "module_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "module_parameters": [
            [name, list(tensor.shape), str(tensor.dtype)]
            for name, tensor in module.state_dict().items()
        ],
    }
    for name, tensor in arrays.items():
        fields[f"{name}_shape"] = list(tensor.shape)
        fields[f"{name}_dtype"] = str(tensor.dtype)
        fields[f"{name}_digest"] = _tensor_digest(tensor)
    return fields


def fingerprint_of(fields: Mapping[str, Any]) -> str:
    """Returns a short hash of `fingerprint_fields`."""
    encoded = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:20]


def _describe_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    changed = [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    return "; ".join(changed) if changed else "fingerprint differs"


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Returns a copy of the module's state dict on the CPU."""
    return {
        name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()
    }


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Writes a checkpoint atomically: a reader sees the previous checkpoint or this one.

    Args:
        path: The checkpoint file, normally `<checkpoint_dir>/last.pt`.
        payload: Tensors and plain values only, so `load_checkpoint` reads it without pickle.
    """
    write_atomically(path, functools.partial(_save_to, payload))


def _save_to(payload: dict[str, Any], path: Path) -> None:
    torch.save(payload, path)


def load_checkpoint(
    path: Path, fingerprint: str, fields: Mapping[str, Any], log: Callable[[str], None]
) -> dict[str, Any] | None:
    """Reads the checkpoint at `path` when it belongs to this run.

    Args:
        path: The checkpoint file.
        fingerprint: This run's `fingerprint_of(fields)`.
        fields: This run's `fingerprint_fields`, plus "world_size" under torchrun.
        log: Receives the reason a checkpoint is not resumed.

    Returns:
        The checkpoint's payload, or None when there is none, it cannot be read, has another
        format, was written by another number of processes or by another run.
    """
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable checkpoint means a fresh start
        log(
            f"checkpoint {path} could not be read ({type(error).__name__}: {error}); starting fresh"
        )
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != (
        CHECKPOINT_FORMAT_VERSION
    ):
        log(f"checkpoint {path} has an unknown format; starting fresh")
        return None
    written_by = checkpoint.get("fingerprint_fields", {}).get("world_size", 1)
    running = fields.get("world_size", 1)
    if written_by != running:
        log(
            f"checkpoint {path} was written by a run of {written_by} process(es) and this run has "
            f"{running}: each process's data shard and batch would differ, so starting fresh"
        )
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        reason = _describe_mismatch(checkpoint.get("fingerprint_fields", {}), fields)
        log(f"checkpoint {path} belongs to a different run ({reason}); starting fresh")
        return None
    return checkpoint


@dataclass(frozen=True)
class TrainingState:
    """What a checkpoint saves and restores besides the progress: the network and its optimizer.

    Attributes:
        module: The network.
        optimizer: Its optimizer.
        scaler: The fp16 gradient scaler, or None.
        generator: The generator that shuffles the batches.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator


def checkpoint_payload(
    *,
    epoch: int,
    fingerprint: str,
    fields: Mapping[str, Any],
    state: TrainingState,
    progress: TrainingProgress,
    cuda_rng: torch.Tensor | None,
    rank_rng: list[Any] | None,
) -> dict[str, Any]:
    """Everything a run needs to continue after `epoch` as if it had never stopped.

    Args:
        epoch: The epoch just completed.
        fingerprint: `fingerprint_of(fields)`.
        fields: The run's `fingerprint_fields`.
        state: The network with this epoch's weights, its optimizer, scaler and generator.
        progress: Where training stands.
        cuda_rng: This process's CUDA RNG state when training on CUDA, else None.
        rank_rng: Under torchrun, [torch RNG state, CUDA RNG state or None] of every process.

    Returns:
        Tensors and plain values only, for `save_checkpoint`.
    """
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "fingerprint_fields": fields,
        "epoch": epoch,
        "model": cpu_state(state.module),
        "optimizer": state.optimizer.state_dict(),
        "grad_scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "best_state": progress.best_state,
        "best_loss": progress.best_loss,
        "best_epoch": progress.best_epoch,
        "epochs_without_improvement": progress.epochs_without_improvement,
        "stopped_early": progress.stopped_early,
        "history": progress.history,
        "shuffle_generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": cuda_rng,
    }
    if rank_rng is not None:
        payload["rank_rng"] = rank_rng
    return payload


def restore_checkpoint(
    checkpoint: Mapping[str, Any],
    *,
    state: TrainingState,
    seed: int,
    device: torch.device,
    rank: int | None,
    log: Callable[[str], None],
) -> TrainingProgress:
    """Puts the weights, optimizer, random streams and progress back as `checkpoint` has them.

    Args:
        checkpoint: A payload returned by `load_checkpoint`.
        state: The network (on `device`), its optimizer, scaler and generator.
        seed: The config's seed, to reseed a shuffle whose state was for another device.
        device: The device trained on.
        rank: This process's rank under torchrun, else None.
        log: Receives what was restored.

    Returns:
        The progress the checkpoint recorded, with `resumed_from` set to its epoch.
    """
    state.module.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    if state.scaler is not None and checkpoint["grad_scaler"] is not None:
        state.scaler.load_state_dict(checkpoint["grad_scaler"])
    try:
        state.generator.set_state(checkpoint["shuffle_generator"])
    except RuntimeError:
        # Written with the data placed elsewhere (CPU vs GPU state.generator): the order of the
        # remaining epochs then differs from an uninterrupted run's, but every epoch still
        # sees all rows.
        state.generator.manual_seed(seed + int(checkpoint["epoch"]))
        log("the checkpoint's shuffle state is for another device; reseeding the shuffle")
    torch_rng, cuda_rng = checkpoint["torch_rng"], checkpoint["cuda_rng"]
    if rank is not None:
        torch_rng, cuda_rng = checkpoint["rank_rng"][rank]
    torch.set_rng_state(torch_rng)
    if device.type == "cuda" and cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
    progress = TrainingProgress(
        history=list(checkpoint["history"]),
        best_loss=float(checkpoint["best_loss"]),
        best_epoch=int(checkpoint["best_epoch"]),
        best_state=checkpoint["best_state"],
        epochs_without_improvement=int(checkpoint["epochs_without_improvement"]),
        stopped_early=bool(checkpoint["stopped_early"]),
        resumed_from=int(checkpoint["epoch"]),
    )
    log(f"resuming from checkpoint at epoch {progress.resumed_from}")
    return progress
