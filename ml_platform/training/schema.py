"""What a model reads and predicts (`FeatureSchema`) and the errors training raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ml_platform.core.tasks import TASKS, Task


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
