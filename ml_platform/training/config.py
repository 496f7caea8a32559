"""How to train (`TrainingConfig`) and what its settings resolve to.

The device, the seeds, the autocast precision, the losses and the optimizer.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ml_platform.core.tasks import Task
from ml_platform.training.schema import ModelArchitectureError

PRECISIONS = ("fp32", "bf16", "fp16")
DATA_LOCATIONS = ("auto", "device", "pinned")


@dataclass(frozen=True)
class TrainingConfig:
    """How to train.

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Training rows per optimizer step. Under torchrun this is the global batch:
            each of the N processes takes batch_size // N rows per step and DDP averages their
            gradients, so batch_size and learning_rate mean the same on any number of GPUs.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        early_stopping_patience: Stop after this many epochs without a validation-loss
            improvement; 0 disables early stopping.
        seed: Seeds torch, numpy, Python's random and the shuffling generator.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        precision: "fp32", "bf16" or "fp16" (autocast; fp16 adds a GradScaler). bf16 on CPU is
            allowed when asked for but is much slower than fp32 there.
        compile: Wrap the module in torch.compile for training; falls back to eager with a log
            line when compilation fails.
        positive_class_weight: Binary only: pos_weight of BCEWithLogitsLoss; None weighs both
            classes equally.
        num_threads: Passed to torch.set_num_threads when set.
        data_location: CUDA only. "device" keeps the whole split in GPU memory, "pinned" keeps it
            in pinned host memory and copies each batch, "auto" picks "device" when the data
            takes under a quarter of the free GPU memory.
        max_seconds: Wall-clock budget of the training: past it, the fit stops after the
            epoch's checkpoint and raises `TrainingBudgetExceeded`; None means no budget.
        started_at: When the budget's clock started (``time.time()``, so torchrun processes
            share it); None starts it when the fit starts.
        primary_metric: The spec's primary metric (``roc_auc``, ``rmse``...), measured on the
            validation split after each epoch (``val_<metric>`` in the history); None measures
            only the losses. It decides nothing: early stopping and the best epoch follow the
            validation loss.
        threshold: The binary decision threshold ``primary_metric`` is measured at.
    """

    epochs: int = 20
    batch_size: int = 4096
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    early_stopping_patience: int = 3
    seed: int = 7
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    positive_class_weight: float | None = None
    num_threads: int | None = None
    data_location: str = "auto"
    max_seconds: float | None = None
    started_at: float | None = None
    primary_metric: str | None = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must not be negative, got {self.weight_decay}")
        if self.early_stopping_patience < 0:
            problems.append(
                f"early_stopping_patience must be 0 (off) or more, got "
                f"{self.early_stopping_patience}"
            )
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.data_location not in DATA_LOCATIONS:
            problems.append(
                f"data_location must be one of {list(DATA_LOCATIONS)}, got {self.data_location!r}"
            )
        if self.positive_class_weight is not None and not self.positive_class_weight > 0:
            problems.append(
                f"positive_class_weight must be positive or None, got {self.positive_class_weight}"
            )
        if self.max_seconds is not None and not self.max_seconds > 0:
            problems.append(f"max_seconds must be positive or None, got {self.max_seconds}")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append(f"num_threads must be at least 1 or None, got {self.num_threads}")
        device = self.device
        if device not in ("auto", "cpu", "cuda") and not (
            device.startswith("cuda:") and device[len("cuda:") :].isdigit()
        ):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        if problems:
            raise ValueError("TrainingConfig: " + "; ".join(problems))


def resolve_device(device: str) -> torch.device:
    """Turns a config device string into a torch device, checking that it exists.

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N".

    Returns:
        The device; "auto" means CUDA when available, else CPU.

    Raises:
        ValueError: A CUDA device was asked for but is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but CUDA is not available to torch "
            f"{torch.__version__}; use device 'cpu' or 'auto'"
        )
    resolved = torch.device(device)
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return torch.device("cuda", index)


def seed_everything(seed: int) -> None:
    """Seeds Python's `random`, numpy's global generator and torch.

    Args:
        seed: The config's seed; numpy takes it modulo 2**32.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_factory(
    device: torch.device, precision: str
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """Returns a function that opens the autocast context of a precision on a device.

    Args:
        device: Where the module runs.
        precision: One of `PRECISIONS`; "fp32" gives a context that does nothing.

    Returns:
        A factory of context managers, called once per forward pass.
    """
    if precision == "fp32":
        nothing = contextlib.nullcontext()
        return lambda: nothing
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def make_losses(
    task: Task, config: TrainingConfig, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """Returns the training loss (mean) and the evaluation loss (sum) for the task.

    Args:
        task: BCEWithLogits for binary (weighted by `positive_class_weight`), CrossEntropy for
            multiclass, MSE for regression.
        config: Training settings.
        device: Where the loss weights live.
    """
    if task == "binary_classification":
        weight = (
            torch.tensor([config.positive_class_weight], dtype=torch.float32, device=device)
            if config.positive_class_weight is not None
            else None
        )
        return (
            nn.BCEWithLogitsLoss(pos_weight=weight),
            nn.BCEWithLogitsLoss(pos_weight=weight, reduction="sum"),
        )
    if task == "multiclass_classification":
        return nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")
    return nn.MSELoss(), nn.MSELoss(reduction="sum")


def make_optimizer(
    module: nn.Module, config: TrainingConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Returns AdamW over the module's trainable parameters, fused on CUDA.

    Args:
        module: The network, already on `device`.
        config: Training settings (learning_rate, weight_decay).
        device: The device trained on.

    Raises:
        ModelArchitectureError: The module has no trainable parameters.
    """
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    if not parameters:
        raise ModelArchitectureError("the module has no trainable parameters")
    if device.type == "cuda" and all(parameter.is_floating_point() for parameter in parameters):
        # One fused kernel instead of a launch per parameter tensor: most of a small MLP's step.
        return torch.optim.AdamW(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
