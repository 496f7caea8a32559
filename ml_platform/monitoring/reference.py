"""The training reference of a model version: what a drift check needs, computed once, as JSON.

Per numeric column: row and missing counts, mean, population standard deviation (Evidently
normalizes the Wasserstein distance by it), extremes, the number of distinct values, and the
distribution itself: the exact distinct values with their counts when there are at most
``EXACT_VALUES_LIMIT`` rows or distinct values (so K-S, chi-squared, the z-test and
Jensen-Shannon are exact, as they are for every reference of at most 1,000 rows, the only size
Evidently runs K-S on), otherwise a quantile sketch: the means of about ``SKETCH_BINS``
equal-count rank bins, with bins that shrink geometrically to single values in both tails. The
Wasserstein distance of a window to the sketch is exact wherever the window's quantile function
does not cross a bin (see ``statistical_tests.wasserstein``); measured on 1M-row normal,
log-normal, Student-t, exponential, uniform and bimodal references it stays within 4e-5 standard
deviations of the exact distance near the 0.1 threshold. Per categorical column: the count of
every category. Missing means NaN, None or +-inf, as Evidently drops them before testing.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from ml_platform.core.helpers import JsonDataclass

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FORMAT_VERSION = 1
EXACT_VALUES_LIMIT = 5_000
SKETCH_BINS = 2_000
SKETCH_GROWTH = 1.05
PREDICTION = "prediction"

Kind = Literal["numeric", "categorical"]


@dataclass
class _ColumnReference(JsonDataclass):
    """What every column's reference has: its reference rows and the non-missing count."""

    rows: int
    count: int

    @property
    def missing_share(self) -> float:
        """The share of reference rows without a (finite) value."""
        return 1.0 - self.count / self.rows if self.rows else 0.0


@dataclass
class NumericReference(_ColumnReference):
    """The reference distribution of one numeric column.

    Attributes:
        rows: rows of the reference frame.
        count: finite values among them (the sample Evidently tests).
        mean: mean of the finite values.
        std: their population standard deviation (``np.std``, as Evidently normalizes by it).
        minimum: the smallest finite value.
        maximum: the largest finite value.
        unique: the number of distinct finite values.
        exact: whether ``values``/``weights`` are the exact distinct values and their counts
            (else the bin means and bin sizes of the quantile sketch).
        values: sorted distinct values, or bin means.
        weights: how many reference values each entry of ``values`` stands for.
    """

    mean: float
    std: float
    minimum: float
    maximum: float
    unique: int
    exact: bool
    values: list[float] = field(repr=False)
    weights: list[int] = field(repr=False)
    kind: Kind = field(default="numeric", init=False)


@dataclass
class CategoricalReference(_ColumnReference):
    """The reference distribution of one categorical column.

    Attributes:
        rows: rows of the reference frame.
        count: non-missing values among them.
        categories: every category seen, as a JSON scalar (str, int, float or bool; other
            values as their ``str``).
        counts: how often each category occurs.
    """

    categories: list[Any] = field(repr=False)
    counts: list[int] = field(repr=False)
    kind: Kind = field(default="categorical", init=False)

    @property
    def frequencies(self) -> dict[Any, int]:
        """Category to count."""
        return dict(zip(self.categories, self.counts, strict=True))


ColumnReference = NumericReference | CategoricalReference


def column_reference_from_dict(data: dict[str, Any]) -> ColumnReference:
    """Read one column's reference written by ``to_dict``, numeric or categorical."""
    if data.get("kind") == "numeric":
        return NumericReference.from_dict(data)
    if data.get("kind") == "categorical":
        return CategoricalReference.from_dict(data)
    raise ValueError(f"unknown column reference kind {data.get('kind')!r}")


@dataclass
class ReferenceStatistics:
    """The drift reference of one model version: its inputs and its predictions.

    Attributes:
        rows: rows of the reference (training) frame.
        columns: per monitored input column, its reference, in the order given.
        prediction: the reference of the model's output on the validation split, or None.
    """

    rows: int
    columns: dict[str, ColumnReference]
    prediction: ColumnReference | None = None

    @property
    def numeric(self) -> list[str]:
        """The numeric columns."""
        return [name for name, column in self.columns.items() if column.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        """The categorical columns."""
        return [name for name, column in self.columns.items() if column.kind == "categorical"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (``from_dict`` reads it back)."""
        return {
            "format_version": FORMAT_VERSION,
            "rows": self.rows,
            "columns": {name: column.to_dict() for name, column in self.columns.items()},
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceStatistics:
        """Read what ``to_dict`` wrote; a different format version is an error."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"reference statistics have format version {version!r}; this platform reads "
                f"version {FORMAT_VERSION}: recompute them by retraining the model version"
            )
        prediction = data.get("prediction")
        return cls(
            rows=int(data["rows"]),
            columns={
                name: column_reference_from_dict(column) for name, column in data["columns"].items()
            },
            prediction=None if prediction is None else column_reference_from_dict(prediction),
        )


def compute_reference(
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    predictions: Any = None,
) -> ReferenceStatistics:
    """The reference statistics of a training frame and, optionally, of the model's output.

    Args:
        frame: the reference rows (the train split's model inputs).
        numeric: the numeric columns to monitor.
        categorical: the categorical columns to monitor.
        predictions: the model's output on the validation split, or None: P(class 1) or a
            regression value per row (monitored as the numeric column ``prediction``), a
            (rows, classes) probability array or frame (its argmax class, categorical), or
            labels (categorical).

    Returns:
        The statistics, JSON-serializable through ``to_dict``.

    Raises:
        ValueError: a column is missing, listed twice, or a numeric column holds values that
            are not numbers.
    """
    overlap = sorted(set(numeric) & set(categorical))
    if overlap:
        raise ValueError(f"columns listed as both numeric and categorical: {overlap}")
    absent = [name for name in [*numeric, *categorical] if name not in frame.columns]
    if absent:
        raise ValueError(
            f"reference frame lacks monitored columns {absent}; it has {list(frame.columns)}"
        )
    columns: dict[str, ColumnReference] = {}
    for name in numeric:
        values, problem = finite_numbers(cast("pd.Series", frame[name]))
        if values is None:
            raise ValueError(f"reference column {name!r} should be numeric: {problem}")
        columns[name] = numeric_reference(values, rows=len(frame))
    for name in categorical:
        columns[name] = categorical_reference(cast("pd.Series", frame[name]))
    prediction = None
    if predictions is not None:
        kind, series = prediction_series(predictions)
        if kind == "numeric":
            values, problem = finite_numbers(series)
            if values is None:
                raise ValueError(f"predictions should be numeric: {problem}")
            prediction = numeric_reference(values, rows=len(series))
        else:
            prediction = categorical_reference(series)
    return ReferenceStatistics(rows=len(frame), columns=columns, prediction=prediction)


def numeric_reference(values: np.ndarray, rows: int) -> NumericReference:
    """The reference of one numeric column from its finite values (any order)."""
    import numpy as np

    ordered = np.sort(np.asarray(values, dtype=np.float64))
    count = len(ordered)
    if count == 0:
        return NumericReference(rows, 0, 0.0, 0.0, 0.0, 0.0, 0, True, [], [])
    distinct, counts = sorted_value_counts(ordered)
    mean = float(np.mean(ordered))
    exact = count <= EXACT_VALUES_LIMIT or len(distinct) <= EXACT_VALUES_LIMIT
    if exact:
        atoms, weights = distinct, counts
    else:
        atoms, weights = quantile_sketch(ordered, mean)
    return NumericReference(
        rows=rows,
        count=count,
        mean=mean,
        std=float(np.std(ordered)),
        minimum=float(ordered[0]),
        maximum=float(ordered[-1]),
        unique=len(distinct),
        exact=exact,
        values=atoms.tolist(),
        weights=weights.tolist(),
    )


def categorical_reference(series: pd.Series) -> CategoricalReference:
    """The reference of one categorical column: every category and its count."""
    counts = category_counts(series)
    return CategoricalReference(
        rows=len(series),
        count=sum(counts.values()),
        categories=list(counts),
        counts=list(counts.values()),
    )


def sorted_value_counts(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts of an already sorted array (no second sort)."""
    import numpy as np

    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(ordered)))
    return ordered[starts], counts


def rank_edges(count: int, bins: int = SKETCH_BINS, growth: float = SKETCH_GROWTH) -> np.ndarray:
    """Rank boundaries of the sketch's bins: single values at both ends, growing to count/bins.

    The tails get small bins because the quantile function is steep there: a bin's error bound
    is its share of the rows times the spread of its values.
    """
    import numpy as np

    base = count / bins
    low = [0]
    size = 1.0
    while size < base and low[-1] + int(size) < count / 2:
        low.append(low[-1] + int(size))
        size *= growth
    start, stop = low[-1], count - low[-1]
    middle = np.linspace(start, stop, max(2, round((stop - start) / base) + 1))
    high = count - np.array(low[::-1])
    return np.unique(np.concatenate((low, middle.round().astype(np.int64), high)))


def quantile_sketch(ordered: np.ndarray, mean: float) -> tuple[np.ndarray, np.ndarray]:
    """Means and sizes of the rank bins of sorted values (sums taken around the mean)."""
    import numpy as np

    edges = rank_edges(len(ordered))
    sums = np.concatenate(([0.0], np.cumsum(ordered - mean)))
    sizes = np.diff(edges)
    means = (sums[edges[1:]] - sums[edges[:-1]]) / sizes + mean
    # Rounding can leave a bin mean a hair outside its bin; keep the atoms sorted.
    return np.maximum.accumulate(means), sizes


def finite_numbers(series: pd.Series) -> tuple[np.ndarray | None, str]:
    """The finite values of a numeric column, or None and what is wrong with it.

    Numbers stored as objects (Decimals, Python ints with None) are accepted; text, dates and
    other values are not.
    """
    import numpy as np
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        values = series.astype("float64").to_numpy()
    elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return None, f"it holds {dtype} values, not numbers"
    else:
        converted = cast("pd.Series", pd.to_numeric(series, errors="coerce"))
        bad = converted.isna() & series.notna()
        if bad.any():
            example = cast("pd.Series", series[bad]).iloc[0]
            return None, (
                f"{int(bad.sum())} of {len(series)} values are not numbers "
                f"(dtype {dtype}, e.g. {example!r})"
            )
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    return values[np.isfinite(values)], ""


def category_key(value: Any) -> Any:
    """A category as a JSON scalar: numpy scalars unwrapped, other objects as their str."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def category_counts(series: pd.Series) -> dict[Any, int]:
    """Count of every category present (missing and +-inf dropped, as Evidently does).

    Raises:
        TypeError: the column holds unhashable values (lists, dicts).
    """
    counts = series.value_counts(dropna=True, sort=False)
    result: dict[Any, int] = {}
    for value, count in counts.items():
        if count <= 0:  # a pandas Categorical reports unused categories with count 0
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        key = category_key(value)
        result[key] = result.get(key, 0) + int(count)
    return result


def prediction_series(predictions: Any) -> tuple[Kind, pd.Series]:
    """A model's output as one column: numeric (P(1), regression value) or categorical (class).

    Two-dimensional output (rows x classes) becomes its argmax class index; one column of
    numbers stays numeric; labels (text, booleans as classes) are categorical.
    """
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        array = predictions.to_numpy()
    elif isinstance(predictions, pd.Series):
        array = None
    else:
        array = np.asarray(predictions)
    if array is not None and array.ndim == 2:
        if array.shape[1] == 1:
            array = array[:, 0]
        else:
            classes = np.argmax(np.asarray(array, dtype=np.float64), axis=1)
            return "categorical", pd.Series(classes, name=PREDICTION)
    series = (
        pd.Series(predictions, name=PREDICTION)
        if array is None
        else pd.Series(array, name=PREDICTION)
    )
    numeric = pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
        series.dtype
    )
    return ("numeric" if numeric else "categorical"), series


def sample_rows(frame: pd.DataFrame, limit: int, seed: int = 0) -> pd.DataFrame:
    """At most ``limit`` rows of ``frame``, a seeded uniform sample in the original order."""
    if limit < 1:
        raise ValueError(f"sample limit must be at least 1, got {limit}")
    import numpy as np

    if len(frame) <= limit:
        return frame.copy()
    positions = np.sort(np.random.default_rng(seed).choice(len(frame), limit, replace=False))
    return frame.iloc[positions].copy()
