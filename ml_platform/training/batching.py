"""From arrays to batches on the device: checked tensors, data placement, batch sources.

`evaluate` runs a module over a batch source, summing across torchrun processes when asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from ml_platform.core.tasks import Task
from ml_platform.training.config import TrainingConfig
from ml_platform.training.schema import TrainingDataError

# Data moves to the GPU only when it leaves most of the memory to activations and the optimizer.
DEVICE_MEMORY_FRACTION = 0.25

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64}


def as_tensor(array: np.ndarray | torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """Converts an array to a contiguous tensor of `dtype`, sharing memory where it can.

    Args:
        array: A numpy array or a tensor.
        dtype: torch.float32, torch.float64 or torch.int64.
        name: The array's name, used in error messages.

    Returns:
        The tensor, on the device a given tensor was on (numpy arrays give CPU tensors).

    Raises:
        TrainingDataError: The array has dtype object.
    """
    if isinstance(array, torch.Tensor):
        return array.detach().to(dtype=dtype).contiguous()
    numpy_array = np.asarray(array)
    if numpy_array.dtype == object:
        raise TrainingDataError(f"{name} has dtype object; pass a numeric array")
    converted = np.ascontiguousarray(numpy_array, dtype=_NUMPY_DTYPES[dtype])
    if not converted.flags.writeable:
        # torch.from_numpy warns on read-only arrays; a copy is the safe answer.
        converted = converted.copy()
    return torch.from_numpy(converted)


def prepare_labels(y: np.ndarray | torch.Tensor, task: Task, name: str) -> torch.Tensor:
    """Converts labels to what the task's loss reads: int64 class indices or float32 values.

    Args:
        y: Labels (N,) or (N, 1).
        task: What the module predicts.
        name: The array's name, used in error messages.

    Returns:
        A one-dimensional tensor.

    Raises:
        TrainingDataError: Multiclass labels are not whole numbers, or the labels are not
            one-dimensional.
    """
    if task == "multiclass_classification":
        if _is_integer(y):
            labels = as_tensor(y, torch.int64, name)
        else:
            values = as_tensor(y, torch.float64, name)
            if not bool((torch.isfinite(values) & (values == torch.round(values))).all()):
                raise TrainingDataError(f"{name} must hold integer class indices for multiclass")
            labels = values.to(torch.int64)
    else:
        labels = as_tensor(y, torch.float32, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise TrainingDataError(f"{name} must be one-dimensional, got shape {tuple(labels.shape)}")
    return labels


def _is_integer(array: np.ndarray | torch.Tensor) -> bool:
    if isinstance(array, torch.Tensor):
        return not array.is_floating_point() and not array.is_complex()
    return np.issubdtype(np.asarray(array).dtype, np.integer)


def validate_arrays(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    task: Task,
) -> None:
    """Checks the splits before training: shapes, finite values, labels that fit the task.

    Args:
        x_train: Training features (N, D).
        y_train: Training labels from `prepare_labels`.
        x_val: Validation features (M, D).
        y_val: Validation labels from `prepare_labels`.
        task: What the module predicts.

    Raises:
        TrainingDataError: A split is empty, mis-shaped or non-finite, binary labels are not 0/1,
            class indices are negative, the feature counts differ, or training has one class.
    """
    for name, x, y in (("train", x_train, y_train), ("validation", x_val, y_val)):
        if x.ndim != 2:
            raise TrainingDataError(f"x_{name} must be 2-D (rows, features), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise TrainingDataError(f"the {name} split is empty (0 rows)")
        if x.shape[0] != y.shape[0]:
            raise TrainingDataError(f"x_{name} has {x.shape[0]} rows but y_{name} has {y.shape[0]}")
        if not bool(torch.isfinite(x).all()):
            raise TrainingDataError(f"x_{name} has NaN or infinite values")
        if task != "multiclass_classification" and not bool(torch.isfinite(y).all()):
            raise TrainingDataError(f"y_{name} has NaN or infinite labels")
        if task == "binary_classification" and not bool(((y == 0) | (y == 1)).all()):
            raise TrainingDataError(f"y_{name} must hold only 0 and 1 for binary_classification")
        if task == "multiclass_classification" and bool((y < 0).any()):
            raise TrainingDataError(f"y_{name} has negative class indices")
    if x_train.shape[1] != x_val.shape[1]:
        raise TrainingDataError(
            f"x_train has {x_train.shape[1]} features but x_validation has {x_val.shape[1]}"
        )
    if task != "regression" and torch.unique(y_train).numel() < 2:
        raise TrainingDataError(
            f"y_train has a single class {torch.unique(y_train).tolist()}; {task} needs at "
            f"least two"
        )


class BatchSource:
    """Serves batches of one split that lives either on the device or in pinned host memory.

    Args:
        x: Features (N, D).
        y: Labels (N,).
        device: Where batches are served.
        on_device: Keep the split on `device` (True) or in pinned host memory (False), copying
            each batch asynchronously.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, device: torch.device, on_device: bool
    ) -> None:
        self.device = device
        self.on_device = on_device
        self.rows = x.shape[0]
        if on_device:
            self.x = x.to(device)
            self.y = y.to(device)
        else:
            self.x = x.pin_memory() if not x.is_pinned() else x
            self.y = y.pin_memory() if not y.is_pinned() else y
        self._staging: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._copied: list[torch.cuda.Event | None] = []

    def shuffled(
        self, permutation: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (x, y) for the rows in `permutation` order, `batch_size` at a time."""
        rows = permutation.shape[0]
        if self.on_device:
            order = permutation.to(self.device)
            x, y = self.x, self.y
            for start in range(0, rows, batch_size):
                index = order[start : start + batch_size]
                yield x.index_select(0, index), y.index_select(0, index)
            return
        if not self._staging:
            # Two pinned staging buffers: the host gathers batch i+1 while batch i copies.
            for _ in range(2):
                self._staging.append(
                    (
                        torch.empty(
                            (batch_size, *self.x.shape[1:]), dtype=self.x.dtype
                        ).pin_memory(),
                        torch.empty(
                            (batch_size, *self.y.shape[1:]), dtype=self.y.dtype
                        ).pin_memory(),
                    )
                )
                self._copied.append(None)
        for step, start in enumerate(range(0, rows, batch_size)):
            slot = step % 2
            event = self._copied[slot]
            if event is not None:
                # The buffer is reused only after its previous asynchronous copy finished.
                event.synchronize()
            index = permutation[start : start + batch_size]
            count = index.shape[0]
            stage_x, stage_y = self._staging[slot]
            torch.index_select(self.x, 0, index, out=stage_x[:count])
            torch.index_select(self.y, 0, index, out=stage_y[:count])
            batch_x = stage_x[:count].to(self.device, non_blocking=True)
            batch_y = stage_y[:count].to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
            self._copied[slot] = copied
            yield batch_x, batch_y

    def sequential(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (x, y) in stored order."""
        for start in range(0, self.rows, batch_size):
            # Slices of pinned memory are pinned too, so these copies are asynchronous.
            yield (
                self.x[start : start + batch_size].to(self.device, non_blocking=True),
                self.y[start : start + batch_size].to(self.device, non_blocking=True),
            )


def place_data(
    config: TrainingConfig,
    device: torch.device,
    tensors: Sequence[torch.Tensor],
    log: Callable[[str], None],
) -> bool:
    """Decides whether the splits live on the device (True) or in pinned host memory (False).

    Off CUDA, and for data already on the GPU, the answer is the device. Otherwise the config's
    data_location decides; "auto" keeps the data on the GPU when it takes under
    `DEVICE_MEMORY_FRACTION` of the free memory, and logs the choice.

    Args:
        config: Training settings.
        device: The device trained on.
        tensors: All the splits' tensors.
        log: Receives the line explaining an "auto" choice.

    Returns:
        True to keep the splits on the device.
    """
    if device.type != "cuda":
        return True
    if any(tensor.is_cuda for tensor in tensors):
        return True
    if config.data_location != "auto":
        return config.data_location == "device"
    needed = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    on_device = needed < DEVICE_MEMORY_FRACTION * free
    log(
        f"data takes {needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB of GPU memory is free: "
        f"keeping it {'on the device' if on_device else 'in pinned host memory'}"
    )
    return on_device


def evaluate(
    module: nn.Module,
    source: BatchSource,
    loss_sum_fn: nn.Module,
    task: Task,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    batch_size: int,
    device: torch.device,
    across_processes: bool = False,
    outputs: list[torch.Tensor] | None = None,
) -> tuple[float, float | None]:
    """Returns (mean loss, accuracy or None) over a split, synchronizing once.

    With `across_processes`, each process holds a share of the split and the sums of loss,
    correct predictions and rows are all-reduced, so every process gets the whole split's figures.

    Args:
        module: The network; left in training mode afterwards.
        source: The split.
        loss_sum_fn: The task's loss with reduction "sum".
        task: What the module predicts; accuracy is None for regression.
        autocast: Opens the precision's autocast context.
        batch_size: Rows per forward pass.
        device: The device the module is on.
        across_processes: Sum over all torchrun processes.
        outputs: When given, receives the module's float outputs batch by batch, in the split's
            order and on the device ((B,) or (B, C) for multiclass), for metrics beyond the loss.
    """
    module.eval()
    with torch.inference_mode():
        loss_total = torch.zeros((), dtype=torch.float32, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for batch_x, batch_y in source.sequential(batch_size):
            with autocast():
                output = module(batch_x)
            output = output.float()
            if task == "multiclass_classification":
                loss_total += loss_sum_fn(output, batch_y)
                correct += (output.argmax(dim=1) == batch_y).sum()
            else:
                output = output.reshape(-1)
                loss_total += loss_sum_fn(output, batch_y)
                if task == "binary_classification":
                    correct += ((output > 0) == (batch_y > 0.5)).sum()
            if outputs is not None:
                outputs.append(output)
    module.train()
    if across_processes:
        totals = torch.stack(
            [
                loss_total.double(),
                correct.double(),
                torch.tensor(float(source.rows), dtype=torch.float64, device=device),
            ]
        )
        dist.all_reduce(totals)
        loss_sum, correct_sum, rows = totals.tolist()
        return loss_sum / rows, correct_sum / rows if task != "regression" else None
    rows = source.rows
    loss = loss_total.item() / rows
    accuracy = correct.item() / rows if task != "regression" else None
    return loss, accuracy
