"""Turning DataFrames into model inputs: `Preprocessor` (standardizing, one-hot, label encoding).

pandas is imported inside the functions that need it: importing this module needs only numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_platform.training.schema import FeatureSchema, TrainingDataError

if TYPE_CHECKING:
    import pandas as pd


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


def fit_preprocessor(
    train: pd.DataFrame, validation: pd.DataFrame, schema: FeatureSchema
) -> tuple[Preprocessor, np.ndarray, np.ndarray]:
    """Checks both splits before any training, then fits the preprocessor on the train split.

    Problems surface in seconds, not after hours of training.

    Args:
        train: Training split; the only source of preprocessing statistics.
        validation: Validation split.
        schema: Columns and task.

    Returns:
        The fitted preprocessor, the encoded train labels and the encoded validation labels
        (see `Preprocessor.encode_labels`).

    Raises:
        TrainingDataError: A split is empty or misses columns; labels are missing, non-finite,
            not 0/1 for binary, of a single class, or (multiclass) unseen in training; a numeric
            feature is not numeric.
    """
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
