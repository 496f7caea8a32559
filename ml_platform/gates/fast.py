"""Fast gate evaluators: vectorized pandas/numpy code that gives Great Expectations' verdict.

Each evaluator mirrors GE's pandas metric for one expectation and returns a
:class:`FastVerdict`, or None when it cannot be sure GE would agree (a missing or ambiguous column,
a dtype GE evaluates element by element, bounds of mixed types, any error): those expectations go
to Great Expectations. Only verdicts come from here; GE explains failures.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from ml_platform.core.helpers import json_safe
from ml_platform.gates.report import MASK, ExpectationOutcome, safe_kwargs, targets_pii
from ml_platform.gates.spec import ExpectationSpec, is_number

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


class FastVerdict(NamedTuple):
    """A fast evaluator's verdict, with the figures GE would report beside it."""

    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None


def fast_outcome(
    spec: ExpectationSpec, fast: FastVerdict, pii: frozenset[str]
) -> ExpectationOutcome:
    """The report entry for a fast verdict, PII-safe.

    Args:
        spec: The expectation that was evaluated.
        fast: Its verdict.
        pii: PII column names: a non-numeric observed value on one of them is masked.

    Returns:
        The outcome, attributed to the ``"fast"`` engine.
    """
    observed = json_safe(fast.observed_value)
    if targets_pii(spec, pii) and not is_number(observed) and observed is not None:
        observed = MASK
    return ExpectationOutcome(
        type=spec.type,
        kwargs=safe_kwargs(spec, pii),
        success=fast.success,
        observed_value=observed,
        unexpected_count=fast.unexpected_count,
        unexpected_percent=fast.unexpected_percent,
        engine="fast",
    )


def fast_evaluate(data: pd.DataFrame | Columns, spec: ExpectationSpec) -> FastVerdict | None:
    """GE's verdict computed with the same pandas operations, or None when unsure.

    Args:
        data: The frame under check, or its :class:`Columns` (shared across one gate's checks).
        spec: The expectation.

    Returns:
        The verdict, or None to send the expectation to Great Expectations: no fast evaluator,
        a missing column, a dtype GE evaluates element by element, bounds of mixed types, or any
        error.
    """
    import numpy as np

    evaluate = FAST_EVALUATORS.get(spec.type)
    if evaluate is None:
        return None
    columns = data if isinstance(data, Columns) else Columns(data)
    try:
        with np.errstate(all="ignore"):  # GE runs the same comparisons, warnings included
            return evaluate(columns, spec.kwargs)
    except Exception as exc:  # any surprise: GE decides and explains
        # Only the exception's type: its message may quote values of a PII column.
        logger.debug("fast check of %s raised %s; GE decides", spec.type, type(exc).__name__)
        return None


class Columns:
    """The frame under check; each column's lookup and null mask are computed once per gate."""

    def __init__(self, frame: pd.DataFrame) -> None:
        """Count the frame's case-folded column names, as GE resolves names case-insensitively.

        Args:
            frame: The data the gate checks.
        """
        self.frame = frame
        self._folded: dict[str, int] = {}
        for name in frame.columns:
            if isinstance(name, str):
                self._folded[name.casefold()] = self._folded.get(name.casefold(), 0) + 1
        self._nonnull: dict[str, tuple[pd.Series, int]] = {}

    def get(self, name: Any) -> pd.Series | None:
        """The column GE would read for ``name``, or None when GE might resolve it differently.

        GE matches column names case-insensitively and takes the first match, so a name whose
        case-folded form fits several columns is left to GE.
        """
        if not isinstance(name, str) or name not in self.frame.columns:
            return None
        if self._folded.get(name.casefold()) != 1:
            return None
        column = self.frame[name]
        if column.ndim != 1:  # duplicated column name
            return None
        return column  # pyright: ignore[reportReturnType]

    def nonnull(self, name: str, column: pd.Series) -> tuple[pd.Series, int]:
        """The non-null values (GE's map metrics drop nulls first) and how many there are."""
        if name not in self._nonnull:
            mask = column.notnull()
            count = int(mask.sum())
            values = column if count == len(column) else cast("pd.Series", column[mask])
            self._nonnull[name] = (values, count)
        return self._nonnull[name]


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    # GE's own arithmetic (expectation._mostly_success), float for float.
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


def _map_result(total: int, nonnull: int, unexpected: int, mostly: float) -> FastVerdict:
    if total == 0 or nonnull == 0:
        return FastVerdict(True, None, unexpected, None)  # vacuously true, as in GE
    return FastVerdict(
        _mostly_success(nonnull, unexpected, mostly), None, unexpected, unexpected / nonnull * 100
    )


def _fast_to_exist(data: Columns, kwargs: dict[str, Any]) -> FastVerdict:
    columns = list(data.frame.columns)
    index = kwargs.get("column_index")
    if index:  # GE ignores column_index 0 (falsy) and checks the name only
        try:
            return FastVerdict(columns[index] == kwargs["column"])
        except IndexError:
            return FastVerdict(False)
    return FastVerdict(kwargs["column"] in columns)


def _fast_not_null(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    total = len(column)
    unexpected = total - data.nonnull(kwargs["column"], column)[1]
    if total == 0:
        return FastVerdict(True, None, unexpected, None)
    success = (total - unexpected) / total >= kwargs.get("mostly", 1.0)
    return FastVerdict(success, None, unexpected, unexpected / total * 100)


def _fast_between(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    import numpy as np

    column = data.get(kwargs["column"])
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if column is None or not _numeric_bounds(low, high):
        return None
    strict_min, strict_max = kwargs.get("strict_min", False), kwargs.get("strict_max", False)
    values, nonnull = data.nonnull(kwargs["column"], column)
    if column.dtype in [int, float]:
        # GE's vectorized branch: the same pandas comparisons on the same values.
        meets = _between(values, low, high, strict_min, strict_max)
        unexpected = int((~meets).sum())
    elif _exact_as_float64(column):
        # GE compares element by element as Python scalars; on these dtypes the values are
        # exactly representable as float64, so numpy gives the same answers.
        array = values.to_numpy(dtype=np.float64)
        meets = _between(array, low, high, strict_min, strict_max)
        unexpected = int(np.count_nonzero(~meets))
    else:
        return None
    return _map_result(len(column), nonnull, unexpected, kwargs.get("mostly", 1.0))


def _numeric_bounds(low: Any, high: Any) -> bool:
    """At least one bound, every bound a float (as GE coerces numbers), and min <= max."""
    if low is None and high is None:
        return False
    for bound in (low, high):
        if bound is None:
            continue
        if not isinstance(bound, float):
            return False
    return not (low is not None and high is not None and low > high)


def _between(values: Any, low: Any, high: Any, strict_min: bool, strict_max: bool) -> Any:
    # Mirrors GE's ColumnValuesBetween._pandas_vectorized, operand order included.
    if low is None:
        return values < high if strict_max else values <= high
    if high is None:
        return low < values if strict_min else low <= values
    above = (low < values) if strict_min else (low <= values)
    below = (values < high) if strict_max else (values <= high)
    return above & below


def _exact_as_float64(column: pd.Series) -> bool:
    """Whether every value of this non-object numeric column converts to float64 exactly."""
    import pandas as pd

    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(dtype):
        return False
    if pd.api.types.is_complex_dtype(dtype):
        return False
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        return True
    if pd.api.types.is_integer_dtype(dtype):
        if getattr(dtype, "itemsize", 8) < 8:
            return True
        values = column.dropna()
        if values.empty:
            return True
        limit = 2**53
        return bool(values.min() >= -limit and values.max() <= limit)
    return False


def _fast_in_set(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    values, nonnull = data.nonnull(kwargs["column"], column)
    unexpected = int((~values.isin(kwargs["value_set"])).sum())
    return _map_result(len(column), nonnull, unexpected, kwargs.get("mostly", 1.0))


def _fast_not_in_set(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    import pandas as pd

    column = data.get(kwargs["column"])
    if column is None or pd.api.types.is_datetime64_any_dtype(column.dtype):
        return None  # GE parses the value set for datetime columns
    values, nonnull = data.nonnull(kwargs["column"], column)
    unexpected = int(values.isin(kwargs["value_set"]).sum())
    return _map_result(len(column), nonnull, unexpected, kwargs.get("mostly", 1.0))


def _fast_unique(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    values, nonnull = data.nonnull(kwargs["column"], column)
    unexpected = int(values.duplicated(keep=False).sum())
    return _map_result(len(column), nonnull, unexpected, kwargs.get("mostly", 1.0))


def _fast_compound_unique(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    names = kwargs["column_list"]
    if any(data.get(name) is None for name in names):
        return None
    rows = data.frame[names]
    ignore = kwargs.get("ignore_row_if", "all_values_are_missing")
    if ignore == "all_values_are_missing":
        rows = rows.dropna(how="all")
    elif ignore == "any_value_is_missing":
        rows = rows.dropna(how="any")
    filtered = len(rows)
    unexpected = int(rows.duplicated(keep=False).sum())
    if len(data.frame) == 0 or filtered == 0:
        return FastVerdict(True, None, unexpected, None)
    success = _mostly_success(filtered, unexpected, kwargs.get("mostly", 1.0))
    return FastVerdict(success, None, unexpected, unexpected / filtered * 100)


def _metric_between(value: Any, kwargs: dict[str, Any]) -> FastVerdict | None:
    """GE's BatchExpectation._validate_metric_value_between for numeric metrics and bounds."""
    import pandas as pd

    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if any(b is not None and not is_number(b) for b in (low, high)):
        return None
    if value is None or pd.isnull(value):
        return FastVerdict(False, None)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return None
    strict_min, strict_max = kwargs.get("strict_min", False), kwargs.get("strict_max", False)
    above = True if low is None else (value > low if strict_min else value >= low)
    below = True if high is None else (value < high if strict_max else value <= high)
    return FastVerdict(bool(above and below), value)


def _fast_row_count(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    return _metric_between(data.frame.shape[0], kwargs)


def _numeric_column(data: Columns, name: str) -> pd.Series | None:
    import pandas as pd

    column = data.get(name)
    if column is None:
        return None
    dtype = column.dtype
    if (
        isinstance(dtype, pd.CategoricalDtype)
        or not pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_complex_dtype(dtype)
    ):
        return None  # object columns may hold Decimals or strings: GE converts or raises
    return column


def _aggregate(statistic: Callable[[pd.Series], Any]) -> Callable[..., FastVerdict | None]:
    def evaluate(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
        column = _numeric_column(data, kwargs["column"])
        if column is None:
            return None
        return _metric_between(statistic(column), kwargs)

    return evaluate


def _fast_unique_value_count(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    return _metric_between(column.nunique(), kwargs)


def _fast_non_null_proportion(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    total = len(column)
    proportion = data.nonnull(kwargs["column"], column)[1] / total if total > 0 else 0
    return _metric_between(proportion, kwargs)


def _fast_distinct_in_set(data: Columns, kwargs: dict[str, Any]) -> FastVerdict | None:
    import numpy as np

    column = data.get(kwargs["column"])
    if column is None:
        return None
    distinct = set(column.dropna().unique())
    if any(isinstance(v, (datetime.date, np.datetime64)) for v in distinct):
        return None  # GE coerces the value set to dates first
    unexpected = len(distinct - set(kwargs["value_set"]))
    return FastVerdict(unexpected == 0, None, unexpected, None)


# The expectations with a fast evaluator; the others always go to Great Expectations.
FAST_EVALUATORS: dict[str, Callable[[Columns, dict[str, Any]], FastVerdict | None]] = {
    "expect_column_to_exist": _fast_to_exist,
    "expect_column_values_to_not_be_null": _fast_not_null,
    "expect_column_values_to_be_between": _fast_between,
    "expect_column_values_to_be_in_set": _fast_in_set,
    "expect_column_values_to_not_be_in_set": _fast_not_in_set,
    "expect_column_values_to_be_unique": _fast_unique,
    "expect_compound_columns_to_be_unique": _fast_compound_unique,
    "expect_table_row_count_to_be_between": _fast_row_count,
    "expect_column_mean_to_be_between": _aggregate(lambda c: c.mean()),
    "expect_column_min_to_be_between": _aggregate(lambda c: c.min()),
    "expect_column_max_to_be_between": _aggregate(lambda c: c.max()),
    "expect_column_unique_value_count_to_be_between": _fast_unique_value_count,
    "expect_column_proportion_of_non_null_values_to_be_between": _fast_non_null_proportion,
    "expect_column_distinct_values_to_be_in_set": _fast_distinct_in_set,
}
