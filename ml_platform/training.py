"""PyTorch trainer for tabular models: preprocessing, training loop, checkpoints and saved models.

Only torch and numpy are imported at module level: this module also runs on GPU machines that have
neither Dagster nor pandas. Functions that take DataFrames import pandas when called.

Started by torchrun (`WORLD_SIZE` > 1), `train_arrays` trains with DistributedDataParallel, one
process per GPU; `ml_platform.distributed` launches such runs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ArrayTrainResult",
    "FeatureSchema",
    "ModelArchitectureError",
    "Preprocessor",
    "Task",
    "TrainResult",
    "TrainedModel",
    "TrainingConfig",
    "TrainingDataError",
    "TrainingDivergedError",
    "build_module",
    "resolve_device",
    "shard_indices",
    "train",
    "train_arrays",
    "validate_training_data",
]

Task = Literal["binary_classification", "multiclass_classification", "regression"]
TASKS: tuple[str, ...] = get_args(Task)
PRECISIONS = ("fp32", "bf16", "fp16")
DATA_LOCATIONS = ("auto", "device", "pinned")

MODEL_FORMAT_VERSION = 1
CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_FILENAME = "last.pt"
WEIGHTS_FILENAME = "model.safetensors"
METADATA_FILENAME = "model.json"

# Data moves to the GPU only when it leaves most of the memory to activations and the optimizer.
DEVICE_MEMORY_FRACTION = 0.25
# Evaluation holds no activations for backward, so it can use larger batches than training.
MIN_EVAL_BATCH_SIZE = 8192
PREDICT_BATCH_SIZE = 65536
# Rows hashed into the checkpoint fingerprint: all of them up to this count, else an even sample.
FINGERPRINT_ROWS = 1_000_000

_LOGGER = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The training or validation data cannot be used as given."""


class ModelArchitectureError(ValueError):
    """The model architecture or its params cannot be turned into a module."""


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite validation loss."""


@dataclass(frozen=True)
class FeatureSchema:
    """Which columns feed the model and what it predicts.

    Attributes:
        numeric: Numeric feature columns, standardized with training statistics.
        categorical: Categorical feature columns (strings or integers), one-hot encoded.
        label: The label column.
        task: What the model predicts.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    label: str
    task: Task

    def __post_init__(self) -> None:
        for name in ("numeric", "categorical"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(
                    f"FeatureSchema.{name} must be a sequence of column names, got the string "
                    f"{value!r}; write ({value!r},)"
                )
            # Accept lists from callers while keeping the dataclass hashable.
            object.__setattr__(self, name, tuple(value))
        if self.task not in TASKS:
            raise ValueError(f"FeatureSchema.task must be one of {list(TASKS)}, got {self.task!r}")
        features = self.numeric + self.categorical
        if not features:
            raise ValueError("FeatureSchema needs at least one numeric or categorical column")
        duplicates = sorted({name for name in features if features.count(name) > 1})
        if duplicates:
            raise ValueError(f"FeatureSchema lists these columns more than once: {duplicates}")
        if self.label in features:
            raise ValueError(f"FeatureSchema.label {self.label!r} is also listed as a feature")

    @property
    def columns(self) -> tuple[str, ...]:
        """All columns the schema reads: features then the label."""
        return (*self.numeric, *self.categorical, self.label)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serializable dict; the inverse of `from_dict`."""
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "label": self.label,
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSchema:
        """Builds a schema from the output of `to_dict`."""
        return cls(
            numeric=tuple(data["numeric"]),
            categorical=tuple(data["categorical"]),
            label=data["label"],
            task=data["task"],
        )


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


@dataclass(frozen=True)
class _Distributed:
    """This process's place in a torchrun job of more than one process."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _environment_integer(name: str) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip().isdigit():
        raise RuntimeError(
            f"environment variable {name} is {value!r} but WORLD_SIZE is "
            f"{os.environ.get('WORLD_SIZE')!r}; start distributed training with torchrun, which "
            f"sets WORLD_SIZE, RANK and LOCAL_RANK together"
        )
    return int(value)


def _distributed_context() -> _Distributed | None:
    """Returns this process's rank when it is one of several torchrun processes, else None."""
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        if world_size <= 1:
            return None
        rank = dist.get_rank()
        return _Distributed(rank, int(os.environ.get("LOCAL_RANK", rank)), world_size)
    if "WORLD_SIZE" not in os.environ or _environment_integer("WORLD_SIZE") <= 1:
        return None
    world_size = _environment_integer("WORLD_SIZE")
    rank = _environment_integer("RANK")
    local_rank = _environment_integer("LOCAL_RANK")
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE is {world_size} but torch {torch.__version__} was built without "
            f"torch.distributed; run a single process or install a torch build with it"
        )
    return _Distributed(rank, local_rank, world_size)


def _join_process_group(device: torch.device) -> None:
    """Initializes the default process group unless the caller did: NCCL on CUDA, else Gloo.

    The group is left initialized so later calls in the same process reuse it; the process that
    owns it (e.g. `ml_platform.distributed`) destroys it before exiting.
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return
    if device.type == "cuda":
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")


def shard_indices(permutation: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Returns one process's share of an epoch's row order under DistributedDataParallel.

    Every process gets ceil(N / world_size) rows, so all run the same number of steps (DDP waits
    for every process at every step and would hang otherwise): when N is not a multiple of
    world_size, the order is padded by repeating its first rows, which are then seen twice that
    epoch. Process r takes positions r, r + world_size, r + 2 * world_size, ... of the padded
    order, so step i of all processes together, each taking b rows, covers positions
    [i * b * world_size, (i + 1) * b * world_size): exactly the batch a single process with
    batch size b * world_size takes at step i.

    Args:
        permutation: The epoch's row order, the same on every process.
        rank: This process's rank, 0 <= rank < world_size.
        world_size: Number of processes.

    Returns:
        The row indices this process trains on this epoch, in order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    rows = permutation.shape[0]
    per_rank = -(-rows // world_size)
    padding = per_rank * world_size - rows
    if padding:
        # Fewer rows than processes needs the order repeated more than once.
        repeats = -(-padding // rows)
        permutation = torch.cat([permutation, permutation.repeat(repeats)[:padding]])
    return permutation[rank::world_size].contiguous()


def _contiguous_share(rows: int, rank: int, world_size: int) -> slice:
    """Rows [start, stop) of a split that one process evaluates; sizes differ by at most 1."""
    return slice(rows * rank // world_size, rows * (rank + 1) // world_size)


def _ignore_line(line: str) -> None:
    del line


def _require_same_resume(
    resumed_from: int | None,
    device: torch.device,
    world_size: int,
    checkpoint_path: Path | None,
) -> None:
    """Fails unless every process resumes from the same epoch (or none): else DDP would hang."""
    mine = torch.tensor([-1 if resumed_from is None else resumed_from], device=device)
    everyone = [torch.zeros_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine)
    epochs = [int(epoch.item()) for epoch in everyone]
    if len(set(epochs)) > 1:
        raise RuntimeError(
            f"torchrun processes disagree on the checkpoint epoch to resume from (by rank, -1 for "
            f"none: {epochs}); checkpoint {checkpoint_path} must be one file every process reads"
        )


def _barrier(device: torch.device) -> None:
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _python_scalar(value: Any) -> Any:
    """Converts numpy scalars to Python ones so they survive JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _sorted_values(values: Sequence[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        # Mixed types (e.g. 1 and "a") have no natural order; a stable textual one will do.
        return sorted(values, key=lambda value: (type(value).__name__, str(value)))


def _missing_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    present = set(frame.columns)
    return [column for column in columns if column not in present]


def _numeric_matrix(frame: pd.DataFrame, columns: Sequence[str], split: str) -> np.ndarray:
    """Returns the columns as float64 (N, K) with nulls as NaN, naming any non-numeric column."""
    if not columns:
        return np.zeros((len(frame), 0), dtype=np.float64)
    try:
        return frame[list(columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        pass
    # Column by column only on failure: slower, but it names the offending column.
    converted = []
    for column in columns:
        try:
            converted.append(frame[column].to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError) as error:
            raise TrainingDataError(
                f"numeric column {column!r} in the {split} split has non-numeric values "
                f"(dtype {frame[column].dtype}): {error}; cast it to a number or list it under "
                f"categorical"
            ) from error
    return np.column_stack(converted)


class Preprocessor:
    """Turns a DataFrame into the float32 matrix the module reads, with statistics from training.

    Numeric columns are standardized with the training mean and standard deviation (a zero
    deviation counts as 1); missing and infinite values become 0, the training mean. Categorical
    columns are one-hot encoded over the sorted training vocabulary; unseen and missing values
    encode as all zeros. Multiclass labels map to the index of the sorted training classes;
    regression targets are standardized and `inverse_transform_target` undoes it.
    """

    def __init__(
        self,
        *,
        schema: FeatureSchema,
        numeric_mean: Sequence[float],
        numeric_std: Sequence[float],
        categories: Mapping[str, Sequence[Any]],
        classes: Sequence[Any] | None = None,
        target_mean: float | None = None,
        target_std: float | None = None,
    ) -> None:
        if len(numeric_mean) != len(schema.numeric) or len(numeric_std) != len(schema.numeric):
            raise ValueError("Preprocessor: one mean and one std per numeric column are required")
        if set(categories) != set(schema.categorical):
            raise ValueError("Preprocessor: one vocabulary per categorical column is required")
        if schema.task == "multiclass_classification" and not classes:
            raise ValueError("Preprocessor: multiclass_classification needs the class list")
        if schema.task == "regression" and (target_mean is None or target_std is None):
            raise ValueError("Preprocessor: regression needs target_mean and target_std")
        self.schema = schema
        self.numeric_mean = np.asarray(numeric_mean, dtype=np.float64)
        self.numeric_std = np.asarray(numeric_std, dtype=np.float64)
        self.categories: dict[str, list[Any]] = {
            column: list(categories[column]) for column in schema.categorical
        }
        self.classes: list[Any] | None = list(classes) if classes is not None else None
        self.target_mean = target_mean
        self.target_std = target_std
        self.feature_names: list[str] = list(schema.numeric) + [
            f"{column}={value}" for column in schema.categorical for value in categories[column]
        ]

    @property
    def output_dim(self) -> int:
        """Module outputs: the number of classes for multiclass, else 1."""
        if self.schema.task == "multiclass_classification":
            assert self.classes is not None
            return len(self.classes)
        return 1

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: FeatureSchema) -> Preprocessor:
        """Learns statistics, vocabularies and classes from the training split.

        Args:
            frame: The training split only; statistics never come from validation data.
            schema: Columns and task.

        Returns:
            The fitted preprocessor.

        Raises:
            TrainingDataError: Columns are missing, a numeric column is not numeric, or the
                labels are unusable for the task.
        """
        missing = _missing_columns(frame, schema.columns)
        if missing:
            raise TrainingDataError(f"the train split is missing columns {missing}")
        numeric = _numeric_matrix(frame, schema.numeric, "train")
        finite = np.isfinite(numeric)
        counts = finite.sum(axis=0)
        safe_counts = np.maximum(counts, 1)
        mean = np.where(finite, numeric, 0.0).sum(axis=0) / safe_counts
        variance = np.where(finite, (numeric - mean) ** 2, 0.0).sum(axis=0) / safe_counts
        std = np.sqrt(variance)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        mean = np.where(counts > 0, mean, 0.0)

        categories: dict[str, list[Any]] = {}
        for column in schema.categorical:
            values = [_python_scalar(value) for value in frame[column].dropna().unique()]
            unsupported = sorted(
                {
                    type(value).__name__
                    for value in values
                    if not isinstance(value, str | int | float)
                }
            )
            if unsupported:
                raise TrainingDataError(
                    f"categorical column {column!r} has values of type {unsupported}; only "
                    f"strings, integers, floats and booleans are supported, cast it to str"
                )
            categories[column] = _sorted_values(values)

        classes: list[Any] | None = None
        target_mean: float | None = None
        target_std: float | None = None
        labels = _column(frame, schema.label, "train")
        if schema.task == "multiclass_classification":
            if bool(labels.isna().any()):
                raise TrainingDataError(_null_label_message(schema.label, labels, "train"))
            classes = _sorted_values([_python_scalar(value) for value in labels.unique()])
        elif schema.task == "regression":
            target = _float_labels(labels, schema.label, "train")
            target_mean = float(target.mean()) if len(target) else 0.0
            spread = float(target.std()) if len(target) else 0.0
            target_std = spread if math.isfinite(spread) and spread > 0 else 1.0
        return cls(
            schema=schema,
            numeric_mean=mean.tolist(),
            numeric_std=std.tolist(),
            categories=categories,
            classes=classes,
            target_mean=target_mean,
            target_std=target_std,
        )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encodes the feature columns.

        Args:
            frame: Any split, or data to predict on; the label column is not needed.

        Returns:
            float32 array of shape (N, len(feature_names)).

        Raises:
            TrainingDataError: Feature columns are missing or a numeric column is not numeric.
        """
        import pandas as pd

        schema = self.schema
        missing = _missing_columns(frame, (*schema.numeric, *schema.categorical))
        if missing:
            raise TrainingDataError(f"the data is missing feature columns {missing}")
        rows = len(frame)
        output = np.zeros((rows, len(self.feature_names)), dtype=np.float32)
        numeric = _numeric_matrix(frame, schema.numeric, "input")
        with np.errstate(invalid="ignore", over="ignore"):
            standardized = (numeric - self.numeric_mean) / self.numeric_std
        # Missing and infinite values sit at the training mean, which is 0 after standardizing.
        standardized[~np.isfinite(standardized)] = 0.0
        output[:, : len(schema.numeric)] = standardized
        offset = len(schema.numeric)
        row_index = np.arange(rows)
        for column in schema.categorical:
            vocabulary = self.categories[column]
            if vocabulary:
                codes = pd.Index(vocabulary).get_indexer(frame[column])
                known = codes >= 0
                output[row_index[known], offset + codes[known]] = 1.0
            offset += len(vocabulary)
        return output

    def encode_labels(self, frame: pd.DataFrame, *, split: str = "input") -> np.ndarray:
        """Encodes the label column for the loss.

        Args:
            frame: A split holding the label column.
            split: Name of the split, used in error messages.

        Returns:
            float32 (N,) for binary (0/1) and regression (standardized); int64 class indices
            (N,) for multiclass.

        Raises:
            TrainingDataError: The label column is missing, has missing or non-finite values, has
                values other than 0/1 for binary, or classes unseen in training for multiclass.
        """
        import pandas as pd

        schema = self.schema
        if schema.label not in frame.columns:
            raise TrainingDataError(
                f"the {split} split is missing the label column {schema.label!r}"
            )
        labels = _column(frame, schema.label, split)
        if schema.task == "multiclass_classification":
            assert self.classes is not None
            if bool(labels.isna().any()):
                raise TrainingDataError(_null_label_message(schema.label, labels, split))
            codes = pd.Index(self.classes).get_indexer(labels)
            if (codes < 0).any():
                unseen_values = pd.unique(labels.to_numpy()[codes < 0])
                unseen = _sorted_values([_python_scalar(value) for value in unseen_values])
                raise TrainingDataError(
                    f"label column {schema.label!r} in the {split} split has classes {unseen[:10]} "
                    f"that the train split does not have (train classes: {self.classes[:20]})"
                )
            return codes.astype(np.int64)
        values = _float_labels(labels, schema.label, split)
        if schema.task == "binary_classification":
            invalid = ~np.isin(values, (0.0, 1.0))
            if invalid.any():
                found = _sorted_values([_python_scalar(v) for v in np.unique(values[invalid])])
                raise TrainingDataError(
                    f"label column {schema.label!r} must hold 0 or 1 for binary_classification; "
                    f"the {split} split has {int(invalid.sum())} other values, e.g. {found[:10]}"
                )
            return values.astype(np.float32)
        assert self.target_mean is not None and self.target_std is not None
        return ((values - self.target_mean) / self.target_std).astype(np.float32)

    def inverse_transform_target(self, values: np.ndarray) -> np.ndarray:
        """Maps standardized regression outputs back to the label's units."""
        assert self.target_mean is not None and self.target_std is not None
        return values.astype(np.float64) * self.target_std + self.target_mean

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serializable dict; the inverse of `from_dict`."""
        return {
            "schema": self.schema.to_dict(),
            "numeric_mean": self.numeric_mean.tolist(),
            "numeric_std": self.numeric_std.tolist(),
            "categories": {column: list(values) for column, values in self.categories.items()},
            "classes": self.classes,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Rebuilds a preprocessor from the output of `to_dict`."""
        return cls(
            schema=FeatureSchema.from_dict(data["schema"]),
            numeric_mean=data["numeric_mean"],
            numeric_std=data["numeric_std"],
            categories=data["categories"],
            classes=data["classes"],
            target_mean=data["target_mean"],
            target_std=data["target_std"],
        )


def _column(frame: pd.DataFrame, name: str, split: str) -> pd.Series:
    import pandas as pd

    column = frame[name]
    if not isinstance(column, pd.Series):
        raise TrainingDataError(f"the {split} split has more than one column named {name!r}")
    return column


def _first_index(labels: pd.Series, mask: np.ndarray) -> Any:
    return _python_scalar(labels.index.to_numpy()[mask][0])


def _null_label_message(label: str, labels: pd.Series, split: str) -> str:
    nulls = labels.isna().to_numpy()
    return (
        f"label column {label!r} has {int(nulls.sum())} missing values in the {split} split "
        f"(first at index {_first_index(labels, nulls)!r}); drop or fill those rows"
    )


def _float_labels(labels: pd.Series, label: str, split: str) -> np.ndarray:
    try:
        values = labels.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise TrainingDataError(
            f"label column {label!r} in the {split} split is not numeric (dtype {labels.dtype}); "
            f"binary_classification needs 0/1 and regression needs numbers"
        ) from error
    bad = ~np.isfinite(values)
    if bad.any():
        raise TrainingDataError(
            f"label column {label!r} has {int(bad.sum())} missing or non-finite values in the "
            f"{split} split (first at index {_first_index(labels, bad)!r}); drop or fill those rows"
        )
    return values


def validate_training_data(
    train: pd.DataFrame, validation: pd.DataFrame, schema: FeatureSchema
) -> None:
    """Checks both splits before any training, so problems surface in seconds, not hours.

    Args:
        train: Training split.
        validation: Validation split.
        schema: Columns and task.

    Raises:
        TrainingDataError: A split is empty or misses columns; labels are missing, non-finite,
            not 0/1 for binary, of a single class, or (multiclass) unseen in training; a numeric
            feature is not numeric.
    """
    _fit_checked(train, validation, schema)


def _fit_checked(
    train: pd.DataFrame, validation: pd.DataFrame, schema: FeatureSchema
) -> tuple[Preprocessor, np.ndarray, np.ndarray]:
    """Validates both splits and returns the fitted preprocessor with both encoded label arrays."""
    problems = []
    for split, frame in (("train", train), ("validation", validation)):
        missing = _missing_columns(frame, schema.columns)
        if missing:
            problems.append(f"the {split} split is missing columns {missing}")
    if problems:
        raise TrainingDataError("; ".join(problems))
    for split, frame in (("train", train), ("validation", validation)):
        if len(frame) == 0:
            raise TrainingDataError(f"the {split} split is empty (0 rows)")
        _numeric_matrix(frame, schema.numeric, split)
    preprocessor = Preprocessor.fit(train, schema)
    train_labels = preprocessor.encode_labels(train, split="train")
    validation_labels = preprocessor.encode_labels(validation, split="validation")
    if schema.task != "regression" and len(np.unique(train_labels)) < 2:
        labels = _column(train, schema.label, "train")
        only = _sorted_values([_python_scalar(value) for value in labels.unique()])
        raise TrainingDataError(
            f"label column {schema.label!r} has a single class {only} in the train split; "
            f"{schema.task} needs at least two classes"
        )
    return preprocessor, train_labels, validation_labels


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.GELU()


MLP_PARAMS = ("hidden_sizes", "dropout", "activation")


def _build_mlp(input_dim: int, output_dim: int, params: Mapping[str, Any]) -> nn.Module:
    unknown = sorted(set(params) - set(MLP_PARAMS))
    if unknown:
        raise ModelArchitectureError(
            f"model.params for architecture 'mlp' accept {list(MLP_PARAMS)}; got unknown {unknown}"
        )
    hidden_sizes = params.get("hidden_sizes", [256, 256])
    dropout = params.get("dropout", 0.0)
    activation = params.get("activation", "relu")
    if not isinstance(hidden_sizes, list | tuple) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in hidden_sizes
    ):
        raise ModelArchitectureError(
            f"model.params.hidden_sizes must be a list of positive integers, got {hidden_sizes!r}"
        )
    if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ModelArchitectureError(f"model.params.dropout must be in [0, 1), got {dropout!r}")
    if activation not in ("relu", "gelu"):
        raise ModelArchitectureError(
            f"model.params.activation must be 'relu' or 'gelu', got {activation!r}"
        )
    layers: list[nn.Module] = []
    width = input_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), _activation(activation)]
        # No Dropout layers at 0: they would only add kernel launches.
        if dropout > 0:
            layers.append(nn.Dropout(float(dropout)))
        width = size
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


def _import_architecture(architecture: str) -> type[nn.Module]:
    hint = "use 'mlp' or 'package.module:ClassName'"
    module_path, separator, attribute_path = architecture.partition(":")
    if not separator or not module_path or not attribute_path or ":" in attribute_path:
        raise ModelArchitectureError(
            f"model.architecture {architecture!r} is neither 'mlp' nor an import path; {hint}"
        )
    try:
        imported = importlib.import_module(module_path)
    except Exception as error:
        raise ModelArchitectureError(
            f"model.architecture {architecture!r}: module {module_path!r} could not be imported "
            f"({error}); {hint}"
        ) from error
    target: Any = imported
    for part in attribute_path.split("."):
        if not hasattr(target, part):
            raise ModelArchitectureError(
                f"model.architecture {architecture!r}: module {module_path!r} has no attribute "
                f"{attribute_path!r}; {hint}"
            )
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, nn.Module)):
        raise ModelArchitectureError(
            f"model.architecture {architecture!r} is not a torch.nn.Module subclass (it is "
            f"{type(target).__name__} {target!r}); point it at a class that extends nn.Module"
        )
    return target


def build_module(
    architecture: str, input_dim: int, output_dim: int, params: Mapping[str, Any] | None
) -> nn.Module:
    """Builds the network from a spec's architecture and params.

    Args:
        architecture: "mlp", or "package.module:ClassName" naming an nn.Module subclass that is
            constructed as `ClassName(input_dim=..., output_dim=..., **params)`.
        input_dim: Width of the encoded feature matrix.
        output_dim: 1 for binary and regression, the number of classes for multiclass.
        params: For "mlp": hidden_sizes (default [256, 256]), dropout (default 0.0) and
            activation ("relu" or "gelu", default "relu"). Otherwise the constructor's keywords.

    Returns:
        The module, on CPU.

    Raises:
        ModelArchitectureError: The architecture cannot be imported, is not an nn.Module, or
            rejects the params.
    """
    params = dict(params or {})
    if architecture == "mlp":
        return _build_mlp(input_dim, output_dim, params)
    module_class = _import_architecture(architecture)
    reserved = sorted({"input_dim", "output_dim"} & set(params))
    if reserved:
        raise ModelArchitectureError(
            f"model.params must not set {reserved} for {architecture!r}: the trainer passes them "
            f"from the data"
        )
    try:
        module = module_class(input_dim=input_dim, output_dim=output_dim, **params)
    except Exception as error:
        raise ModelArchitectureError(
            f"model.architecture {architecture!r}: constructing {module_class.__name__}"
            f"(input_dim={input_dim}, output_dim={output_dim}, **params) failed with "
            f"{type(error).__name__}: {error}; params passed: {params!r}"
        ) from error
    return module


@dataclass
class ArrayTrainResult:
    """What `train_arrays` returns.

    Attributes:
        module: The module with the best validation-loss weights, on CPU, in eval mode.
        history: One dict per completed epoch, resumed ones included: epoch, train_loss,
            validation_loss, and validation_accuracy for classification.
        best_epoch: Epoch (1-based) whose weights were returned.
        epochs_run: Epochs completed in total, resumed ones included.
        resumed_from_epoch: Last completed epoch of the checkpoint resumed from, else None.
        samples_per_second: Training rows processed per second of training loop in this call,
            validation and checkpointing excluded; 0.0 when no epoch ran.
        device: The device trained on, e.g. "cuda:0".
        stopped_early: Whether early stopping ended training.
    """

    module: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int | None
    samples_per_second: float
    device: str
    stopped_early: bool = False


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64}


def _as_tensor(array: np.ndarray | torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
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


def _prepare_labels(y: np.ndarray | torch.Tensor, task: Task, name: str) -> torch.Tensor:
    if task == "multiclass_classification":
        if _is_integer(y):
            labels = _as_tensor(y, torch.int64, name)
        else:
            values = _as_tensor(y, torch.float64, name)
            if not bool((torch.isfinite(values) & (values == torch.round(values))).all()):
                raise TrainingDataError(f"{name} must hold integer class indices for multiclass")
            labels = values.to(torch.int64)
    else:
        labels = _as_tensor(y, torch.float32, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise TrainingDataError(f"{name} must be one-dimensional, got shape {tuple(labels.shape)}")
    return labels


def _is_integer(array: np.ndarray | torch.Tensor) -> bool:
    if isinstance(array, torch.Tensor):
        return not array.is_floating_point() and not array.is_complex()
    return np.issubdtype(np.asarray(array).dtype, np.integer)


def _validate_arrays(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    task: Task,
) -> None:
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


def _check_output_shape(module: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> None:
    """Runs two rows through the module so shape mistakes fail before the first epoch."""
    was_training = module.training
    module.eval()
    # no_grad rather than inference_mode: lazy modules create their parameters here.
    with torch.no_grad():
        output = module(x[:2])
    module.train(was_training)
    shape = tuple(output.shape)
    if task == "multiclass_classification":
        classes = int(y.max().item()) + 1
        if output.ndim != 2 or output.shape[1] < max(classes, 2):
            raise ModelArchitectureError(
                f"the module returns shape {shape} for 2 rows; multiclass_classification with "
                f"{classes} classes in y_train needs (rows, n_classes >= {max(classes, 2)})"
            )
    elif not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise ModelArchitectureError(
            f"the module returns shape {shape} for 2 rows; {task} needs (rows, 1) or (rows,)"
        )


def _tensor_digest(tensor: torch.Tensor) -> str:
    rows = tensor.shape[0]
    if rows > FINGERPRINT_ROWS:
        index = torch.arange(FINGERPRINT_ROWS) * (rows - 1) // (FINGERPRINT_ROWS - 1)
        tensor = tensor.index_select(0, index.to(tensor.device))
    data = tensor.detach().cpu().contiguous().numpy()
    return hashlib.blake2b(data.data, digest_size=16).hexdigest()


def _fingerprint_fields(
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


def _fingerprint(fields: Mapping[str, Any]) -> str:
    encoded = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:20]


def _describe_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    changed = [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    return "; ".join(changed) if changed else "fingerprint differs"


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()
    }


def _save_to(payload: dict[str, Any], path: Path) -> None:
    torch.save(payload, path)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Has `write` fill a temporary file beside `path`, then renames it into place.

    A reader, or a run resumed after a crash, sees the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class _BatchSource:
    """Serves batches of one split that lives either on the device or in pinned host memory."""

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


def _place_data(
    config: TrainingConfig,
    device: torch.device,
    tensors: Sequence[torch.Tensor],
    log: Callable[[str], None],
) -> bool:
    """Decides whether the splits live on the device (True) or in pinned host memory (False)."""
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


def _make_losses(
    task: Task, config: TrainingConfig, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """Returns the training loss (mean) and the evaluation loss (sum) for the task."""
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


def _make_optimizer(
    module: nn.Module, config: TrainingConfig, device: torch.device
) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    if not parameters:
        raise ModelArchitectureError("the module has no trainable parameters")
    if device.type == "cuda" and all(parameter.is_floating_point() for parameter in parameters):
        # One fused kernel instead of a launch per parameter tensor: most of a small MLP's step.
        return torch.optim.AdamW(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def _autocast_factory(
    device: torch.device, precision: str
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    if precision == "fp32":
        nothing = contextlib.nullcontext()
        return lambda: nothing
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _evaluate(
    module: nn.Module,
    source: _BatchSource,
    loss_sum_fn: nn.Module,
    task: Task,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    batch_size: int,
    device: torch.device,
    across_processes: bool = False,
) -> tuple[float, float | None]:
    """Returns (mean loss, accuracy or None) over a split, synchronizing once.

    With `across_processes`, each process holds a share of the split and the sums of loss,
    correct predictions and rows are all-reduced, so every process gets the whole split's figures.
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


def _load_checkpoint(
    path: Path, fingerprint: str, fields: Mapping[str, Any], log: Callable[[str], None]
) -> dict[str, Any] | None:
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
        log: Receives progress lines; defaults to this module's logger.

    Returns:
        The best module (on CPU, eval mode), per-epoch history and run facts. Under torchrun,
        samples_per_second counts the rows of all processes.

    Raises:
        TrainingDataError: The arrays are empty, mis-shaped, non-finite or have one class.
        ModelArchitectureError: The module's output shape does not fit the task.
        TrainingDivergedError: The validation loss became NaN or infinite.
        ValueError: Under torchrun, batch_size is below the number of processes or a process
            has no GPU of its own.
    """
    distributed = _distributed_context()
    is_main = distributed is None or distributed.is_main
    log = log or _LOGGER.info
    if not is_main:
        # One voice per run: the other processes compute the same figures.
        log = _ignore_line
        on_epoch_end = None
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    if distributed is not None and device.type == "cuda":
        if distributed.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK is {distributed.local_rank} but {torch.cuda.device_count()} CUDA "
                f"device(s) are visible; start torchrun with --nproc_per_node at most the GPU count"
            )
        if config.device not in ("auto", "cuda"):
            log(f"device {config.device!r} is ignored under torchrun: each process uses its GPU")
        device = torch.device("cuda", distributed.local_rank)
    batch_size = config.batch_size
    if distributed is not None:
        if config.batch_size < distributed.world_size:
            raise ValueError(
                f"TrainingConfig: batch_size {config.batch_size} is the global batch and must be "
                f"at least the {distributed.world_size} torchrun processes, which each need a row "
                f"per step"
            )
        batch_size = config.batch_size // distributed.world_size
    train_x = _as_tensor(x_train, torch.float32, "x_train")
    val_x = _as_tensor(x_val, torch.float32, "x_validation")
    train_y = _prepare_labels(y_train, task, "y_train")
    val_y = _prepare_labels(y_val, task, "y_validation")
    _validate_arrays(train_x, train_y, val_x, val_y, task)
    if distributed is not None:
        _join_process_group(device)

    _seed_everything(config.seed)
    module.to(device)
    module.train()
    _check_output_shape(module, train_x[:2].to(device), train_y, task)
    arrays = {"x_train": train_x, "y_train": train_y, "x_val": val_x, "y_val": val_y}
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILENAME if checkpoint_dir else None
    # Hashing the data costs a pass over it, so only runs that checkpoint pay for it.
    fields = _fingerprint_fields(config, task, module, arrays) if checkpoint_path else {}
    if checkpoint_path and distributed is not None:
        # Shards and per-process batches depend on it; single-process fingerprints are unchanged.
        fields["world_size"] = distributed.world_size
    fingerprint = _fingerprint(fields)

    # Every process keeps all training rows (each epoch's shard is a new draw from all of them)
    # but only its share of the validation rows.
    if distributed is not None:
        share = _contiguous_share(val_x.shape[0], distributed.rank, distributed.world_size)
        val_x, val_y = val_x[share], val_y[share]
    loss_fn, loss_sum_fn = _make_losses(task, config, device)
    optimizer = _make_optimizer(module, config, device)
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    autocast = _autocast_factory(device, config.precision)
    on_device = _place_data(config, device, [train_x, train_y, val_x, val_y], log)
    train_source = _BatchSource(train_x, train_y, device, on_device)
    val_source = _BatchSource(val_x, val_y, device, on_device)
    # Shuffle where the data lives: a CPU randperm of millions of rows plus its copy to the GPU
    # cost more per epoch than the whole epoch of a small model (measured on an H100: 0.42x).
    # Under torchrun every process draws the same permutation and takes its shard of it.
    generator = torch.Generator(device=device if on_device else "cpu")
    generator.manual_seed(config.seed)

    history: list[dict[str, float]] = []
    best_loss = math.inf
    best_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_improvement = 0
    stopped_early = False
    start_epoch = 1
    resumed_from: int | None = None

    checkpoint = (
        _load_checkpoint(checkpoint_path, fingerprint, fields, log) if checkpoint_path else None
    )
    if checkpoint is not None:
        module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler is not None and checkpoint["grad_scaler"] is not None:
            scaler.load_state_dict(checkpoint["grad_scaler"])
        try:
            generator.set_state(checkpoint["shuffle_generator"])
        except RuntimeError:
            # Written with the data placed elsewhere (CPU vs GPU generator): the order of the
            # remaining epochs then differs from an uninterrupted run's, but every epoch still
            # sees all rows.
            generator.manual_seed(config.seed + int(checkpoint["epoch"]))
            log("the checkpoint's shuffle state is for another device; reseeding the shuffle")
        torch_rng, cuda_rng = checkpoint["torch_rng"], checkpoint["cuda_rng"]
        if distributed is not None:
            torch_rng, cuda_rng = checkpoint["rank_rng"][distributed.rank]
        torch.set_rng_state(torch_rng)
        if device.type == "cuda" and cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
        history = list(checkpoint["history"])
        best_loss = float(checkpoint["best_loss"])
        best_epoch = int(checkpoint["best_epoch"])
        best_state = checkpoint["best_state"]
        epochs_without_improvement = int(checkpoint["epochs_without_improvement"])
        stopped_early = bool(checkpoint["stopped_early"])
        resumed_from = int(checkpoint["epoch"])
        start_epoch = resumed_from + 1
        log(f"resuming from checkpoint at epoch {resumed_from}")

    trained: nn.Module = module
    if distributed is not None:
        _require_same_resume(resumed_from, device, distributed.world_size, checkpoint_path)
        # DDP copies rank 0's weights to the other processes here and averages gradients in
        # backward; a global batch of `batch_size` rows thus takes the same step as one process.
        trained = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
        if checkpoint is None:
            # Distinct dropout masks per process; the shuffle has its own, shared generator.
            torch.manual_seed(config.seed + distributed.rank)

    eval_batch_size = max(config.batch_size, MIN_EVAL_BATCH_SIZE)
    flatten_output = task != "multiclass_classification"
    patience = config.early_stopping_patience

    forward: Callable[[torch.Tensor], torch.Tensor] = trained
    compile_pending = False
    if config.compile:
        try:
            forward = torch.compile(trained)  # pyright: ignore[reportAssignmentType]
            compile_pending = True
        except Exception as error:  # compile is an optimization, never required
            log(f"torch.compile unavailable ({type(error).__name__}: {error}); training eagerly")

    def step(batch_x: torch.Tensor, batch_y: torch.Tensor) -> torch.Tensor:
        with autocast():
            output = forward(batch_x)
            if flatten_output:
                output = output.reshape(-1)
            loss = loss_fn(output, batch_y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    rows = train_x.shape[0]
    # Rows each process trains on per epoch: all of them, or an equal shard under torchrun.
    local_rows = rows if distributed is None else -(-rows // distributed.world_size)
    epoch_rows = rows if distributed is None else local_rows * distributed.world_size
    if stopped_early or start_epoch > config.epochs:
        log(f"the checkpoint's run is complete ({len(history)} epochs); nothing left to train")
    else:
        log(
            f"training on {device} ({config.precision}, data "
            f"{'on the device' if on_device else 'in pinned host memory'}): "
            f"{train_x.shape[0]} train rows, {arrays['x_val'].shape[0]} validation rows, "
            f"{train_x.shape[1]} features, epochs {start_epoch}..{config.epochs}"
        )
        if distributed is not None:
            log(
                f"DistributedDataParallel over {distributed.world_size} processes: "
                f"{batch_size} rows per process per step, a global batch of "
                f"{batch_size * distributed.world_size} (batch_size {config.batch_size}), "
                f"{local_rows} rows per process per epoch"
            )
    # Rows per batch, to weigh the per-batch mean losses into the epoch's mean.
    batch_rows = torch.tensor(
        [min(batch_size, local_rows - start) for start in range(0, local_rows, batch_size)],
        dtype=torch.float64,
        device=device,
    )
    train_seconds = 0.0
    samples = 0
    for epoch in range(start_epoch, config.epochs + 1):
        if stopped_early:
            break
        started = time.perf_counter()
        permutation = torch.randperm(rows, generator=generator, device=generator.device)
        if distributed is not None:
            permutation = shard_indices(permutation, distributed.rank, distributed.world_size)
        # Losses stay on the device until the epoch ends: no host sync, no extra kernel per batch.
        losses: list[torch.Tensor] = []
        for batch_x, batch_y in train_source.shuffled(permutation, batch_size):
            if compile_pending:
                compile_pending = False
                try:
                    loss = step(batch_x, batch_y)
                # torch.compile compiles lazily, so its failures surface on the first step.
                except Exception as error:
                    log(f"torch.compile failed ({type(error).__name__}: {error}); training eagerly")
                    forward = trained
                    loss = step(batch_x, batch_y)
            else:
                loss = step(batch_x, batch_y)
            losses.append(loss)
        loss_sum = (torch.stack(losses).double() * batch_rows).sum()
        if distributed is not None:
            dist.all_reduce(loss_sum)
        train_loss = float(loss_sum.item()) / epoch_rows
        train_seconds += time.perf_counter() - started
        samples += epoch_rows

        validation_loss, validation_accuracy = _evaluate(
            module,
            val_source,
            loss_sum_fn,
            task,
            autocast,
            eval_batch_size,
            device,
            across_processes=distributed is not None,
        )
        if not math.isfinite(validation_loss):
            raise TrainingDivergedError(
                f"validation loss is {validation_loss} at epoch {epoch} (train loss {train_loss}); "
                f"lower learning_rate or use precision fp32"
            )
        improved = validation_loss < best_loss
        if improved:
            best_loss, best_epoch = validation_loss, epoch
            best_state = _cpu_state(module)
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
        metrics: dict[str, float] = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            "validation_loss": validation_loss,
        }
        if validation_accuracy is not None:
            metrics["validation_accuracy"] = validation_accuracy
        history.append(metrics)
        log(
            f"epoch {epoch}/{config.epochs}: "
            + " ".join(f"{key}={value:.6g}" for key, value in metrics.items() if key != "epoch")
            + (" (best)" if improved else "")
        )
        if patience > 0 and epochs_without_improvement >= patience:
            stopped_early = True
            log(
                f"early stopping after epoch {epoch}: validation_loss has not improved for "
                f"{patience} epochs (best {best_loss:.6g} at epoch {best_epoch})"
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, dict(metrics))
        if checkpoint_path is not None:
            cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            rank_rng: list[Any] | None = None
            if distributed is not None:
                # Each process's own random state, so dropout repeats exactly after a resume.
                rank_rng = [None] * distributed.world_size
                dist.all_gather_object(rank_rng, [torch.get_rng_state(), cuda_rng])
            if is_main:
                payload = {
                    "format_version": CHECKPOINT_FORMAT_VERSION,
                    "fingerprint": fingerprint,
                    "fingerprint_fields": fields,
                    "epoch": epoch,
                    "model": _cpu_state(module),
                    "optimizer": optimizer.state_dict(),
                    "grad_scaler": scaler.state_dict() if scaler is not None else None,
                    "best_state": best_state,
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "epochs_without_improvement": epochs_without_improvement,
                    "stopped_early": stopped_early,
                    "history": history,
                    "shuffle_generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": cuda_rng,
                }
                if rank_rng is not None:
                    payload["rank_rng"] = rank_rng
                _write_atomically(checkpoint_path, functools.partial(_save_to, payload))
            if distributed is not None:
                # No process runs ahead of a checkpoint that is not yet on disk.
                _barrier(device)

    assert best_state is not None, "at least one epoch ran or was resumed"
    module.load_state_dict(best_state)
    module.to("cpu")
    module.eval()
    return ArrayTrainResult(
        module=module,
        history=history,
        best_epoch=best_epoch,
        epochs_run=len(history),
        resumed_from_epoch=resumed_from,
        samples_per_second=samples / train_seconds if train_seconds > 0 else 0.0,
        device=str(device),
        stopped_early=stopped_early,
    )


@dataclass(eq=False)
class TrainedModel:
    """A trained module with everything needed to predict on raw DataFrames.

    Attributes:
        module: The network, on CPU unless moved.
        preprocessor: Encoder fitted on the training split.
        schema: Columns and task.
        architecture: "mlp" or the "package.module:ClassName" it was built from.
        model_params: The params the module was built with.
    """

    module: nn.Module
    preprocessor: Preprocessor
    schema: FeatureSchema
    architecture: str
    model_params: dict[str, Any]

    def predict(self, frame: pd.DataFrame, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Predicts on raw rows.

        Args:
            frame: Rows with the schema's feature columns (the label is not needed).
            batch_size: Rows per forward pass.

        Returns:
            float64: binary, the probability of class 1 (N,); multiclass, class probabilities
            (N, C) in the order of `preprocessor.classes`; regression, values (N,) in the
            label's units.
        """
        features = self.preprocessor.transform(frame)
        parameter = next(iter(self.module.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        task = self.schema.task
        self.module.eval()
        outputs: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, features.shape[0], batch_size):
                batch = torch.from_numpy(features[start : start + batch_size]).to(device)
                output = self.module(batch).float()
                if task == "multiclass_classification":
                    output = torch.softmax(output, dim=1)
                else:
                    output = output.reshape(-1)
                    if task == "binary_classification":
                        output = torch.sigmoid(output)
                outputs.append(output.cpu())
        if outputs:
            predictions = torch.cat(outputs).numpy().astype(np.float64)
        elif task == "multiclass_classification":
            predictions = np.zeros((0, self.preprocessor.output_dim), dtype=np.float64)
        else:
            predictions = np.zeros((0,), dtype=np.float64)
        if task == "regression":
            predictions = self.preprocessor.inverse_transform_target(predictions)
        return predictions

    def save(self, directory: str | Path) -> None:
        """Writes `model.safetensors` (weights) and `model.json` (everything else) to a directory.

        Nothing is pickled, so loading never runs code from the files.

        Args:
            directory: Created if missing; existing files of the same names are replaced.
        """
        from safetensors.torch import save_model

        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format_version": MODEL_FORMAT_VERSION,
            "architecture": self.architecture,
            "model_params": self.model_params,
            "schema": self.schema.to_dict(),
            "preprocessor": self.preprocessor.to_dict(),
            "torch_version": torch.__version__,
        }
        try:
            text = json.dumps(metadata, indent=2, sort_keys=True)
        except TypeError as error:
            raise ValueError(
                f"model_params must be JSON-serializable to be saved in {METADATA_FILENAME}: "
                f"{error}"
            ) from error

        def write_weights(path: Path) -> None:
            # save_model drops tensors that share storage (tied weights) and makes the rest
            # contiguous; load_model restores the ties.
            save_model(
                self.module,
                str(path),
                metadata={"ml_platform_format_version": str(MODEL_FORMAT_VERSION)},
                force_contiguous=True,
            )

        _write_atomically(target / WEIGHTS_FILENAME, write_weights)
        _write_atomically(target / METADATA_FILENAME, lambda path: path.write_text(text))

    @classmethod
    def load(cls, directory: str | Path) -> TrainedModel:
        """Loads a model written by `save`, without unpickling anything.

        Args:
            directory: Holds `model.json` and `model.safetensors`.

        Returns:
            The model, on CPU, in eval mode.

        Raises:
            ValueError: The files are missing, of an unknown format version, or do not match
                the architecture.
        """
        from safetensors.torch import load_model

        source = Path(directory)
        metadata_path, weights_path = source / METADATA_FILENAME, source / WEIGHTS_FILENAME
        for path in (metadata_path, weights_path):
            if not path.exists():
                raise ValueError(
                    f"{path} does not exist; was the model saved with TrainedModel.save?"
                )
        metadata = json.loads(metadata_path.read_text())
        version = metadata.get("format_version")
        if version != MODEL_FORMAT_VERSION:
            raise ValueError(
                f"{metadata_path} has format_version {version!r}; this ml_platform reads "
                f"{MODEL_FORMAT_VERSION}"
            )
        preprocessor = Preprocessor.from_dict(metadata["preprocessor"])
        # Initial weights are overwritten below; forking keeps callers' random streams intact.
        with torch.random.fork_rng(devices=[]):
            module = build_module(
                metadata["architecture"],
                len(preprocessor.feature_names),
                preprocessor.output_dim,
                metadata["model_params"],
            )
        try:
            load_model(module, weights_path, strict=True, device="cpu")
        except RuntimeError as error:
            raise ValueError(
                f"{weights_path} does not match architecture {metadata['architecture']!r} with "
                f"params {metadata['model_params']!r}: {error}"
            ) from error
        module.eval()
        return cls(
            module=module,
            preprocessor=preprocessor,
            schema=FeatureSchema.from_dict(metadata["schema"]),
            architecture=metadata["architecture"],
            model_params=metadata["model_params"],
        )


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: The model with the best validation-loss weights.
        history: One dict per completed epoch: epoch, train_loss, validation_loss, and
            validation_accuracy for classification.
        best_epoch: Epoch whose weights the model has.
        epochs_run: Epochs completed in total, resumed ones included.
        resumed_from_epoch: Last completed epoch of the checkpoint resumed from, else None.
        samples_per_second: Training rows per second of training loop in this call.
        device: The device trained on.
        stopped_early: Whether early stopping ended training.
    """

    model: TrainedModel
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int | None
    samples_per_second: float
    device: str
    stopped_early: bool = False


def check_serializable_params(model_params: Mapping[str, Any]) -> None:
    """Model params are saved as JSON with the model; anything else is refused up front."""
    try:
        json.dumps(model_params)
    except TypeError as error:
        raise ModelArchitectureError(
            f"model.params must be JSON-serializable (they are saved with the model): {error}"
        ) from error


def train(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    schema: FeatureSchema,
    architecture: str,
    model_params: dict[str, Any],
    config: TrainingConfig,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Trains a model on DataFrames: validate, fit the preprocessor on train, train, wrap.

    Args:
        train: Training split; the only source of preprocessing statistics.
        validation: Validation split, for early stopping and choosing the best epoch.
        schema: Columns and task.
        architecture: "mlp" or "package.module:ClassName" (see `build_module`).
        model_params: Params for the architecture; must be JSON-serializable.
        config: Training settings.
        checkpoint_dir: Where `last.pt` is kept to resume an interrupted run.
        on_epoch_end: Called with (epoch, metrics) once per epoch.
        log: Receives progress lines; defaults to this module's logger.

    Returns:
        The trained model and the run's history and facts.

    Raises:
        TrainingDataError: The data cannot be trained on; the message names column and split.
        ModelArchitectureError: The architecture or params are unusable.
        TrainingDivergedError: The validation loss became NaN or infinite.
    """
    preprocessor, y_train, y_val = _fit_checked(train, validation, schema)
    check_serializable_params(model_params)
    x_train = preprocessor.transform(train)
    x_val = preprocessor.transform(validation)
    # Seeded here too so the initial weights, drawn before train_arrays runs, repeat.
    _seed_everything(config.seed)
    module = build_module(architecture, x_train.shape[1], preprocessor.output_dim, model_params)
    result = train_arrays(
        x_train,
        y_train,
        x_val,
        y_val,
        schema.task,
        module,
        config,
        checkpoint_dir=checkpoint_dir,
        on_epoch_end=on_epoch_end,
        log=log,
    )
    model = TrainedModel(
        module=result.module,
        preprocessor=preprocessor,
        schema=schema,
        architecture=architecture,
        model_params=dict(model_params),
    )
    return TrainResult(
        model=model,
        history=result.history,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        resumed_from_epoch=result.resumed_from_epoch,
        samples_per_second=result.samples_per_second,
        device=result.device,
        stopped_early=result.stopped_early,
    )
