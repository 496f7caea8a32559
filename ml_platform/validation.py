"""Data gates: Great Expectations 1.x suites that keep bad data from training a model.

A gate is a list of :class:`ExpectationSpec` (GE expectation names and GE's own arguments),
declared in a spec's ``gates.data`` section (:class:`DataGateSpec`) and completed by
:func:`default_expectations` from the model's schema. :func:`run_gate` checks a DataFrame against
them and returns a :class:`GateReport` that asset checks turn into metadata.

Two modes give the same verdict for every expectation:

- ``"ge"`` validates every expectation with Great Expectations (the reference).
- ``"fast"`` (the default) evaluates every expectation with vectorized pandas/numpy code that
  mirrors GE's pandas metrics, then asks GE only about the expectations that failed (and those
  without a fast evaluator) for its diagnostics; GE's verdict wins where they differ. Clean data
  never imports Great Expectations.

Values of PII columns never leave this module: they are masked in outcomes, summaries and
metadata, never given to GE unless an expectation targets the column, and expectations that
target a PII column run in a separate in-memory GE context that stores nothing, with no
unexpected-value lists. Importing this module imports neither Great Expectations nor pandas.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

Mode = Literal["fast", "ge"]
MASK = "***"
SAMPLE_SIZE = 5
DATA_DOCS_INDEX_LIMIT = 100  # newest validation results listed on the Data Docs index page
DEFAULT_LABEL_BALANCE = (0.0005, 0.5)
# The largest finite float: ``between -FINITE and FINITE`` rejects +-inf (GE ignores NaN).
FINITE = sys.float_info.max
_GATE_INDEX = "ml_platform_gate_index"
_NOT_IDENTITY = {"id", "rendered_content", "notes", "meta"}
_TASKS = ("binary_classification", "multiclass_classification", "regression")
_IGNORE_ROW_IF = ("all_values_are_missing", "any_value_is_missing", "never")
_BOUND_KWARGS = ("min_value", "max_value", "strict_min", "strict_max")
_MISSING_COLUMN = re.compile(r'^Error: The column "[^"]*" in BatchData does not exist\.$')


class _Signature(NamedTuple):
    required: tuple[str, ...]
    optional: tuple[str, ...]
    bounds: Literal["float", "int", "comparable", None] = None  # how GE coerces min/max_value


# The expectations a gate may use, with the arguments GE accepts for each (row_condition and
# suite parameters are left out on purpose: the fast evaluators do not implement them).
SUPPORTED_EXPECTATIONS: dict[str, _Signature] = {
    "expect_column_to_exist": _Signature(("column",), ("column_index",)),
    "expect_column_values_to_not_be_null": _Signature(("column",), ("mostly",)),
    "expect_column_values_to_be_between": _Signature(
        ("column",), (*_BOUND_KWARGS, "mostly"), "comparable"
    ),
    "expect_column_values_to_be_in_set": _Signature(("column", "value_set"), ("mostly",)),
    "expect_column_values_to_not_be_in_set": _Signature(("column", "value_set"), ("mostly",)),
    "expect_column_values_to_be_unique": _Signature(("column",), ("mostly",)),
    "expect_compound_columns_to_be_unique": _Signature(
        ("column_list",), ("mostly", "ignore_row_if")
    ),
    "expect_table_row_count_to_be_between": _Signature((), _BOUND_KWARGS, "int"),
    "expect_column_mean_to_be_between": _Signature(("column",), _BOUND_KWARGS, "comparable"),
    "expect_column_min_to_be_between": _Signature(("column",), _BOUND_KWARGS, "comparable"),
    "expect_column_max_to_be_between": _Signature(("column",), _BOUND_KWARGS, "comparable"),
    "expect_column_unique_value_count_to_be_between": _Signature(("column",), _BOUND_KWARGS, "int"),
    "expect_column_proportion_of_non_null_values_to_be_between": _Signature(
        ("column",), _BOUND_KWARGS, "float"
    ),
    "expect_column_distinct_values_to_be_in_set": _Signature(("column", "value_set"), ()),
    "expect_column_values_to_be_of_type": _Signature(("column", "type_"), ("mostly",)),
}
# Arguments every expectation accepts; they do not change the verdict.
_COMMON_KWARGS = ("meta", "notes", "description")


class ExpectationSpec(BaseModel):
    """One Great Expectations expectation: its snake-case name and GE's own arguments.

    ``kwargs`` are checked against the arguments GE accepts for ``type`` and normalized the way
    GE coerces them (GE turns numeric ``min_value``/``max_value`` of most expectations into floats
    and row/distinct counts into ints), so the fast evaluators see exactly what GE sees.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _supported_type(cls, value: str) -> str:
        if value not in SUPPORTED_EXPECTATIONS:
            known = sorted(SUPPORTED_EXPECTATIONS)
            close = difflib.get_close_matches(value, known, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise ValueError(
                f"type: unknown or unsupported expectation '{value}'; {hint}"
                f"supported: {', '.join(known)}"
            )
        return value

    @field_validator("kwargs")
    @classmethod
    def _valid_kwargs(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("type")
        if kind is None:  # the type itself was invalid and has been reported
            return value
        return _normalize_kwargs(kind, value)

    @property
    def columns(self) -> list[str]:
        """The columns this expectation reads (empty for table-level expectations)."""
        if "column" in self.kwargs:
            return [self.kwargs["column"]]
        return list(self.kwargs.get("column_list", []))


class DataGateSpec(BaseModel):
    """The ``gates.data`` section of a spec: explicit expectations plus schema defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expectations: list[ExpectationSpec] = Field(default_factory=list)
    defaults: bool = True
    min_rows: int = Field(default=1000, ge=0)
    # Binary tasks: bounds on the share of positive labels; None means DEFAULT_LABEL_BALANCE.
    label_balance: tuple[float, float] | None = None
    pii_columns: list[str] = Field(default_factory=list)

    @field_validator("label_balance")
    @classmethod
    def _balance_bounds(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(
                f"label_balance must be [low, high] with 0 <= low <= high <= 1, got {list(value)}"
            )
        return value


def _normalize_kwargs(kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    signature = SUPPORTED_EXPECTATIONS[kind]
    allowed = (*signature.required, *signature.optional, *_COMMON_KWARGS)
    problems: list[str] = []
    for key in kwargs:
        if key not in allowed:
            close = [a for a in allowed if a.startswith(key)] or difflib.get_close_matches(
                key, allowed, n=1
            )
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            problems.append(f"kwargs.{key} is not an argument of {kind} ({hint})")
    for key in signature.required:
        if key not in kwargs:
            problems.append(f"kwargs.{key} is required by {kind}; add it")
    if problems:
        raise ValueError("; ".join(problems))
    normalized: dict[str, Any] = {}
    for key, value in kwargs.items():
        where = f"kwargs.{key} of {kind}"
        normalized[key] = _normalize_value(key, value, signature, where)
    if signature.bounds is not None:
        low, high = normalized.get("min_value"), normalized.get("max_value")
        if low is None and high is None:
            raise ValueError(f"{kind} needs kwargs.min_value, kwargs.max_value or both")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            raise ValueError(
                f"kwargs.min_value ({low}) is greater than kwargs.max_value ({high}) in {kind}"
            )
    return normalized


def _normalize_value(key: str, value: Any, signature: _Signature, where: str) -> Any:
    if key == "column" or key == "type_":
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where} must be a non-empty string, got {value!r}")
        return value
    if key == "column_list":
        if (
            not isinstance(value, (list, tuple))
            or len(value) < 2
            or not all(isinstance(c, str) and c for c in value)
        ):
            raise ValueError(f"{where} must be a list of at least two column names, got {value!r}")
        return list(value)
    if key == "column_index":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if key == "mostly":
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{where} must be a number between 0 and 1, got {value!r}")
        return float(value)
    if key in ("strict_min", "strict_max"):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if key == "value_set":
        if not isinstance(value, (list, tuple, set, frozenset)) or not value:
            raise ValueError(f"{where} must be a non-empty list of values, got {value!r}")
        items = list(value)
        for item in items:
            if not isinstance(item, (str, int, float, datetime.date)) and item is not None:
                raise ValueError(f"{where} must hold scalar values, got {item!r}")
        return items
    if key == "ignore_row_if":
        if value not in _IGNORE_ROW_IF:
            raise ValueError(f"{where} must be one of {', '.join(_IGNORE_ROW_IF)}, got {value!r}")
        return value
    if key in ("min_value", "max_value"):
        return _normalize_bound(value, signature.bounds, where)
    if key == "meta" and not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {value!r}")
    return value


def _normalize_bound(value: Any, bounds: str | None, where: str) -> Any:
    """Coerce a bound as GE's pydantic models do, rejecting what GE would coerce surprisingly."""
    if value is None:
        return None
    if bounds == "int":
        if _is_number(value) and float(value).is_integer():
            return int(value)
        raise ValueError(f"{where} must be a whole number, got {value!r}")
    if _is_number(value):
        return float(value)  # GE stores numeric bounds as floats (5 becomes 5.0)
    if bounds == "comparable" and isinstance(value, (str, datetime.date)):
        return value  # dates and date strings, for datetime columns
    raise ValueError(f"{where} must be a number, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def default_expectations(
    *,
    label: str | None,
    task: str | None,
    key_columns: Sequence[str],
    timestamp_column: str | None,
    feature_columns: Sequence[str],
    gate: DataGateSpec,
    numeric_columns: Sequence[str] = (),
) -> list[ExpectationSpec]:
    """The expectations every training set of this schema must meet.

    Args:
        label: The label column, or None for data without labels (features, scoring sets).
        task: ``binary_classification``, ``multiclass_classification``, ``regression`` or None.
        key_columns: Entity key columns; with the timestamp they identify a row.
        timestamp_column: The event timestamp column, or None.
        feature_columns: Columns the model reads; each must exist and hold some non-null value.
        gate: The gate declaration; ``defaults=False`` returns no expectations.
        numeric_columns: Numeric feature columns; each must hold no +-inf (NaN stays allowed:
            the trainer imputes missing values).

    Returns:
        The default expectations: the row count floor; the label present, non-null and valid
        for the task (binary: values in {0, 1} and a positive share within ``label_balance``;
        regression: finite; every task: at least two distinct values); non-null entity keys and
        timestamp, unique together; every feature column present and not entirely null.
    """
    if not gate.defaults:
        return []
    if task is not None and task not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}, got {task!r}")
    result: list[ExpectationSpec] = [
        _expect("expect_table_row_count_to_be_between", min_value=gate.min_rows)
    ]
    if label is not None:
        result += [
            _expect("expect_column_to_exist", column=label),
            _expect("expect_column_values_to_not_be_null", column=label),
        ]
        if task == "binary_classification":
            low, high = gate.label_balance or DEFAULT_LABEL_BALANCE
            result += [
                _expect("expect_column_values_to_be_in_set", column=label, value_set=[0, 1]),
                _expect(
                    "expect_column_mean_to_be_between", column=label, min_value=low, max_value=high
                ),
            ]
        elif task == "regression":
            result.append(
                _expect(
                    "expect_column_values_to_be_between",
                    column=label,
                    min_value=-FINITE,
                    max_value=FINITE,
                )
            )
        if task is not None:  # a single class (or a constant target) teaches nothing
            result.append(
                _expect("expect_column_unique_value_count_to_be_between", column=label, min_value=2)
            )
    keys = list(dict.fromkeys([*key_columns, *([timestamp_column] if timestamp_column else [])]))
    for column in keys:
        result.append(_expect("expect_column_values_to_not_be_null", column=column))
    if len(keys) == 1:
        result.append(_expect("expect_column_values_to_be_unique", column=keys[0]))
    elif len(keys) > 1:
        result.append(_expect("expect_compound_columns_to_be_unique", column_list=keys))
    for column in dict.fromkeys(feature_columns):
        result.append(_expect("expect_column_to_exist", column=column))
        # Missing values are imputed in training, but a column with none at all is a broken join.
        result.append(
            _expect(
                "expect_column_proportion_of_non_null_values_to_be_between",
                column=column,
                min_value=0,
                strict_min=True,
            )
        )
    for column in dict.fromkeys(numeric_columns):
        result.append(
            _expect(
                "expect_column_values_to_be_between",
                column=column,
                min_value=-FINITE,
                max_value=FINITE,
            )
        )
    return result


def gate_expectations(
    gate: DataGateSpec,
    *,
    label: str | None,
    task: str | None,
    key_columns: Sequence[str],
    timestamp_column: str | None,
    feature_columns: Sequence[str],
    numeric_columns: Sequence[str] = (),
) -> list[ExpectationSpec]:
    """The defaults (unless ``gate.defaults`` is false) followed by the gate's own expectations."""
    defaults = default_expectations(
        label=label,
        task=task,
        key_columns=key_columns,
        timestamp_column=timestamp_column,
        feature_columns=feature_columns,
        gate=gate,
        numeric_columns=numeric_columns,
    )
    return [*defaults, *gate.expectations]


def _expect(kind: str, **kwargs: Any) -> ExpectationSpec:
    return ExpectationSpec(type=kind, kwargs=kwargs)


@dataclass
class ExpectationOutcome:
    """The verdict on one expectation, safe to log: PII values are masked as ``***``."""

    type: str
    kwargs: dict[str, Any]
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)
    exception: str | None = None  # why the expectation could not be evaluated
    engine: str = "fast"  # "fast" or "great_expectations": who gave the verdict

    def describe(self) -> str:
        """``type(column=..., ...)`` without meta arguments."""
        shown = {k: v for k, v in self.kwargs.items() if k not in _COMMON_KWARGS}
        arguments = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        return f"{self.type}({arguments})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary."""
        return {
            "type": self.type,
            "kwargs": _json_safe(self.kwargs),
            "success": self.success,
            "observed_value": _json_safe(self.observed_value),
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": _json_safe(self.unexpected_percent),
            "sample": _json_safe(self.sample),
            "exception": self.exception,
            "engine": self.engine,
        }


@dataclass
class GateReport:
    """What a gate found: one outcome per expectation, in the order they were given."""

    success: bool
    rows: int
    outcomes: list[ExpectationOutcome]
    engine: str
    seconds: float
    data_docs_path: str | None = None
    name: str = ""

    def failed(self) -> list[ExpectationOutcome]:
        """The outcomes that failed."""
        return [outcome for outcome in self.outcomes if not outcome.success]

    def summary(self) -> str:
        """One line per failed expectation (one line in all when every expectation held)."""
        failed = self.failed()
        if not failed:
            return (
                f"gate '{self.name}' passed: {len(self.outcomes)} expectations held on "
                f"{self.rows} rows"
            )
        return "\n".join(f"FAILED {o.describe()}: {_failure_detail(o)}" for o in failed)

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-safe, PII-safe dictionary for asset-check metadata."""
        return {
            "gate": self.name,
            "success": self.success,
            "rows": self.rows,
            "expectations": len(self.outcomes),
            "failed": len(self.failed()),
            "engine": self.engine,
            "seconds": round(self.seconds, 3),
            "data_docs_path": self.data_docs_path,
            "summary": self.summary(),
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
        }


def _failure_detail(outcome: ExpectationOutcome) -> str:
    if outcome.exception:
        return f"error: {outcome.exception}"
    if outcome.type == "expect_column_to_exist":
        where = " at that position" if outcome.kwargs.get("column_index") else ""
        return f"the column is missing{where}"
    parts: list[str] = []
    if outcome.unexpected_count is not None:
        percent = outcome.unexpected_percent
        share = f" ({percent:.4g}%)" if percent is not None else ""
        parts.append(f"{outcome.unexpected_count} unexpected values{share}")
    if outcome.sample:
        parts.append(f"e.g. {_short(outcome.sample)}")
    if outcome.observed_value is not None:
        parts.append(f"observed {_short(outcome.observed_value)}")
    elif not parts:
        parts.append("nothing to measure (no rows, or the column is entirely null)")
    return ", ".join(parts)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(_json_safe(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_safe(value: Any) -> Any:
    """Plain JSON types; non-finite floats become strings ("nan", "inf")."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # numpy's float64 too, returned as a plain float
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(items)
            except TypeError:
                items = sorted(items, key=repr)
        return [_json_safe(v) for v in items]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _json_safe(item())
        except (TypeError, ValueError):
            pass
    isoformat = getattr(value, "isoformat", None)  # pandas Timestamp
    if callable(isoformat):
        return str(isoformat())
    return str(value)


def run_gate(
    frame: pd.DataFrame,
    expectations: Sequence[ExpectationSpec],
    *,
    name: str,
    pii_columns: Sequence[str] = (),
    context_root: str | None = None,
    mode: Mode = "fast",
) -> GateReport:
    """Check ``frame`` against ``expectations``; never raises for bad data.

    Args:
        frame: The data, e.g. a training set.
        expectations: What must hold, in the order outcomes are reported.
        name: The gate's name (e.g. ``fraud_detector/training_set``), used for GE suites.
        pii_columns: Columns whose values must never appear in outcomes, logs or GE files.
        context_root: A directory for a file-based GE context (suites, validation results and
            Data Docs are kept there); None uses an in-memory context.
        mode: ``"fast"`` (vectorized checks, GE only for diagnostics of failures) or ``"ge"``
            (GE validates every expectation).

    Returns:
        The report; a missing column, empty frame or wrong dtype is a failed outcome.
    """
    if mode not in ("fast", "ge"):
        raise ValueError(f"mode must be 'fast' or 'ge', got {mode!r}")
    start = time.perf_counter()
    specs = list(expectations)
    pii = frozenset(pii_columns)
    outcomes: dict[int, ExpectationOutcome] = {}
    to_ge: list[int] = []
    fast_verdicts: dict[int, bool] = {}
    if mode == "fast":
        columns = _Columns(frame)
        for index, spec in enumerate(specs):
            fast = _fast_evaluate(columns, spec)
            if fast is not None and fast.success:
                outcomes[index] = _fast_outcome(spec, fast, pii)
            else:
                to_ge.append(index)
                if fast is not None:
                    fast_verdicts[index] = fast.success
    else:
        to_ge = list(range(len(specs)))
    data_docs_path = None
    if to_ge:
        ge_outcomes, data_docs_path = _validate_with_ge(
            frame, [(i, specs[i]) for i in to_ge], name, pii, context_root, full=mode == "ge"
        )
        for index, outcome in ge_outcomes.items():
            if index in fast_verdicts and fast_verdicts[index] != outcome.success:
                logger.warning(
                    "gate '%s': the fast check said %s but Great Expectations said %s for %s; "
                    "using Great Expectations' verdict",
                    name,
                    fast_verdicts[index],
                    outcome.success,
                    outcome.describe(),
                )
        outcomes.update(ge_outcomes)
    ordered = [outcomes[i] for i in range(len(specs))]
    if mode == "ge":
        engine = "great_expectations"
    else:
        engine = "fast+great_expectations" if to_ge else "fast"
    return GateReport(
        success=all(o.success for o in ordered),
        rows=len(frame),
        outcomes=ordered,
        engine=engine,
        seconds=time.perf_counter() - start,
        data_docs_path=data_docs_path,
        name=name,
    )


def _targets_pii(spec: ExpectationSpec, pii: frozenset[str]) -> bool:
    folded = {p.casefold() for p in pii}
    return any(c in pii or c.casefold() in folded for c in spec.columns)


def _safe_kwargs(spec: ExpectationSpec, pii: frozenset[str]) -> dict[str, Any]:
    kwargs = dict(spec.kwargs)
    if "value_set" in kwargs and _targets_pii(spec, pii):
        kwargs["value_set"] = MASK
    return kwargs


class _Fast(NamedTuple):
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None


def _fast_outcome(spec: ExpectationSpec, fast: _Fast, pii: frozenset[str]) -> ExpectationOutcome:
    observed = _json_safe(fast.observed_value)
    if _targets_pii(spec, pii) and not _is_number(observed) and observed is not None:
        observed = MASK
    return ExpectationOutcome(
        type=spec.type,
        kwargs=_safe_kwargs(spec, pii),
        success=fast.success,
        observed_value=observed,
        unexpected_count=fast.unexpected_count,
        unexpected_percent=fast.unexpected_percent,
        engine="fast",
    )


def _fast_evaluate(data: pd.DataFrame | _Columns, spec: ExpectationSpec) -> _Fast | None:
    """GE's verdict computed with the same pandas operations, or None when unsure.

    None sends the expectation to Great Expectations: a missing column, a dtype GE evaluates
    element by element, bounds of mixed types, or any error.
    """
    import numpy as np

    evaluate = _FAST_EVALUATORS.get(spec.type)
    if evaluate is None:
        return None
    columns = data if isinstance(data, _Columns) else _Columns(data)
    try:
        with np.errstate(all="ignore"):  # GE runs the same comparisons, warnings included
            return evaluate(columns, spec.kwargs)
    except Exception as exc:  # any surprise: GE decides and explains
        # Only the exception's type: its message may quote values of a PII column.
        logger.debug("fast check of %s raised %s; GE decides", spec.type, type(exc).__name__)
        return None


class _Columns:
    """The frame under check; each column's lookup and null mask are computed once per gate."""

    def __init__(self, frame: pd.DataFrame) -> None:
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


def _map_result(total: int, nonnull: int, unexpected: int, mostly: float) -> _Fast:
    if total == 0 or nonnull == 0:
        return _Fast(True, None, unexpected, None)  # vacuously true, as in GE
    return _Fast(
        _mostly_success(nonnull, unexpected, mostly), None, unexpected, unexpected / nonnull * 100
    )


def _fast_to_exist(data: _Columns, kwargs: dict[str, Any]) -> _Fast:
    columns = list(data.frame.columns)
    index = kwargs.get("column_index")
    if index:  # GE ignores column_index 0 (falsy) and checks the name only
        try:
            return _Fast(columns[index] == kwargs["column"])
        except IndexError:
            return _Fast(False)
    return _Fast(kwargs["column"] in columns)


def _fast_not_null(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    total = len(column)
    unexpected = total - data.nonnull(kwargs["column"], column)[1]
    if total == 0:
        return _Fast(True, None, unexpected, None)
    success = (total - unexpected) / total >= kwargs.get("mostly", 1.0)
    return _Fast(success, None, unexpected, unexpected / total * 100)


def _fast_between(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
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


def _fast_in_set(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    values, nonnull = data.nonnull(kwargs["column"], column)
    unexpected = int((~values.isin(kwargs["value_set"])).sum())
    return _map_result(len(column), nonnull, unexpected, kwargs.get("mostly", 1.0))


def _fast_not_in_set(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    import pandas as pd

    column = data.get(kwargs["column"])
    if column is None or pd.api.types.is_datetime64_any_dtype(column.dtype):
        return None  # GE parses the value set for datetime columns
    values, nonnull = data.nonnull(kwargs["column"], column)
    unexpected = int(values.isin(kwargs["value_set"]).sum())
    return _map_result(len(column), nonnull, unexpected, kwargs.get("mostly", 1.0))


def _fast_unique(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    values, nonnull = data.nonnull(kwargs["column"], column)
    unexpected = int(values.duplicated(keep=False).sum())
    return _map_result(len(column), nonnull, unexpected, kwargs.get("mostly", 1.0))


def _fast_compound_unique(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
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
        return _Fast(True, None, unexpected, None)
    success = _mostly_success(filtered, unexpected, kwargs.get("mostly", 1.0))
    return _Fast(success, None, unexpected, unexpected / filtered * 100)


def _metric_between(value: Any, kwargs: dict[str, Any]) -> _Fast | None:
    """GE's BatchExpectation._validate_metric_value_between for numeric metrics and bounds."""
    import pandas as pd

    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if any(b is not None and not _is_number(b) for b in (low, high)):
        return None
    if value is None or pd.isnull(value):
        return _Fast(False, None)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return None
    strict_min, strict_max = kwargs.get("strict_min", False), kwargs.get("strict_max", False)
    above = True if low is None else (value > low if strict_min else value >= low)
    below = True if high is None else (value < high if strict_max else value <= high)
    return _Fast(bool(above and below), value)


def _fast_row_count(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    return _metric_between(data.frame.shape[0], kwargs)


def _numeric_column(data: _Columns, name: str) -> pd.Series | None:
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


def _aggregate(statistic: Callable[[pd.Series], Any]) -> Callable[..., _Fast | None]:
    def evaluate(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
        column = _numeric_column(data, kwargs["column"])
        if column is None:
            return None
        return _metric_between(statistic(column), kwargs)

    return evaluate


def _fast_unique_value_count(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    return _metric_between(column.nunique(), kwargs)


def _fast_non_null_proportion(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    column = data.get(kwargs["column"])
    if column is None:
        return None
    total = len(column)
    proportion = data.nonnull(kwargs["column"], column)[1] / total if total > 0 else 0
    return _metric_between(proportion, kwargs)


def _fast_distinct_in_set(data: _Columns, kwargs: dict[str, Any]) -> _Fast | None:
    import numpy as np

    column = data.get(kwargs["column"])
    if column is None:
        return None
    distinct = set(column.dropna().unique())
    if any(isinstance(v, (datetime.date, np.datetime64)) for v in distinct):
        return None  # GE coerces the value set to dates first
    unexpected = len(distinct - set(kwargs["value_set"]))
    return _Fast(unexpected == 0, None, unexpected, None)


_FAST_EVALUATORS: dict[str, Callable[[_Columns, dict[str, Any]], _Fast | None]] = {
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


def _validate_with_ge(
    frame: pd.DataFrame,
    indexed: list[tuple[int, ExpectationSpec]],
    name: str,
    pii: frozenset[str],
    context_root: str | None,
    *,
    full: bool,
) -> tuple[dict[int, ExpectationOutcome], str | None]:
    """GE's outcomes for ``indexed`` expectations, and the Data Docs index when one was built.

    Expectations on PII columns run apart, in an in-memory context that stores nothing, with
    no unexpected-value lists; the others run in the file context when ``context_root`` is set.
    ``full`` gives GE every non-PII column (the reference mode); otherwise only the columns
    the expectations read.
    """
    public = [(i, s) for i, s in indexed if not _targets_pii(s, pii)]
    private = [(i, s) for i, s in indexed if _targets_pii(s, pii)]
    outcomes: dict[int, ExpectationOutcome] = {}
    docs: str | None = None
    if public:
        keep = _columns_to_keep(frame, public, pii, full=full)
        found, docs = _ge_run(
            frame, public, name, keep, pii, context_root, result_format="SUMMARY", private=False
        )
        outcomes.update(found)
    if private:
        keep = _columns_to_keep(frame, private, pii, full=False)
        found, _ = _ge_run(
            frame,
            private,
            name,
            keep,
            pii,
            None,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 0},
            private=True,
        )
        outcomes.update(found)
    return outcomes, docs


def _columns_to_keep(
    frame: pd.DataFrame,
    indexed: list[tuple[int, ExpectationSpec]],
    pii: frozenset[str],
    *,
    full: bool,
) -> set[Any]:
    """Columns whose real values GE gets: the ones read (and their case-insensitive twins)."""
    wanted = {c.casefold() for _, spec in indexed for c in spec.columns}
    keep = {c for c in frame.columns if isinstance(c, str) and c.casefold() in wanted}
    if full:
        keep |= {c for c in frame.columns if c not in pii}
    return keep


def _frame_for_ge(
    frame: pd.DataFrame, keep: set[Any], indexed: list[tuple[int, ExpectationSpec]]
) -> pd.DataFrame:
    """``frame`` with only the ``keep`` columns' values; others dropped or zeroed.

    Columns are only zeroed (kept by name, in place) when an expectation checks a column's
    position, so ``column_index`` means the same thing as on the full frame.
    """
    import numpy as np
    import pandas as pd

    if all(c in keep for c in frame.columns):
        return frame
    if not any("column_index" in spec.kwargs for _, spec in indexed):
        return pd.DataFrame(frame[[c for c in frame.columns if c in keep]])
    placeholder = pd.Series(np.zeros(len(frame), dtype=bool), index=frame.index)
    columns = {c: (frame[c] if c in keep else placeholder) for c in frame.columns}
    return pd.DataFrame(columns, index=frame.index)


def _ge_run(
    frame: pd.DataFrame,
    indexed: list[tuple[int, ExpectationSpec]],
    name: str,
    keep: set[Any],
    pii: frozenset[str],
    context_root: str | None,
    *,
    result_format: Any,
    private: bool,
) -> tuple[dict[int, ExpectationOutcome], str | None]:
    outcomes: dict[int, ExpectationOutcome] = {}
    docs: str | None = None
    try:
        with _exclusive(context_root):
            docs = _ge_validate(
                frame, indexed, name, keep, pii, context_root, result_format, private, outcomes
            )
    except Exception as exc:  # GE itself failed: every pending expectation fails, explained
        for index, spec in indexed:
            if index not in outcomes:
                message = f"Great Expectations could not run: {type(exc).__name__}: {exc}"
                outcomes[index] = _error_outcome(spec, pii, message, private)
    for index, spec in indexed:
        if index not in outcomes:
            message = "Great Expectations returned no result for this expectation"
            outcomes[index] = _error_outcome(spec, pii, message, private)
    return outcomes, docs


def _ge_validate(
    frame: pd.DataFrame,
    indexed: list[tuple[int, ExpectationSpec]],
    name: str,
    keep: set[Any],
    pii: frozenset[str],
    context_root: str | None,
    result_format: Any,
    private: bool,
    outcomes: dict[int, ExpectationOutcome],
) -> str | None:
    """Validate with GE, filling ``outcomes``; returns the Data Docs index when one was built."""
    import great_expectations as gx
    import numpy as np

    context = _ge_context(gx, context_root)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "gate"
    # A suite is a set: GE drops an expectation equal to one already added (meta and notes
    # aside), so duplicates share the first one's result.
    added: list[tuple[Any, int]] = []
    expectations: list[Any] = []
    duplicate_of: dict[int, int] = {}
    for index, spec in indexed:
        try:
            expectation = _ge_expectation(gx, spec, index)
        except Exception as exc:
            message = f"Great Expectations rejected the expectation: {exc}"
            outcomes[index] = _error_outcome(spec, pii, message, private)
            continue
        identity = (spec.type, expectation.dict(exclude=_NOT_IDENTITY))
        first = next((i for key, i in added if key == identity), None)
        if first is None:
            added.append((identity, index))
            expectations.append(expectation)
        else:
            duplicate_of[index] = first
    if not added:
        return None
    # Built whole, then stored once: adding expectations one by one to a stored suite rewrites
    # the suite file after each one.
    suite = _replace_suite(context, gx.ExpectationSuite(name=safe_name, expectations=expectations))
    batch = (
        context.data_sources.add_or_update_pandas(safe_name)
        .add_dataframe_asset(safe_name)
        .add_batch_definition_whole_dataframe("whole_dataframe")
    )
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(data=batch, suite=suite, name=safe_name)
    )
    batch_parameters = {"dataframe": _frame_for_ge(frame, keep, indexed)}
    with np.errstate(all="ignore"):  # GE's own arithmetic on NaN and inf warns
        if context_root is None:
            result = validation.run(batch_parameters=batch_parameters, result_format=result_format)
        else:
            from great_expectations.checkpoint.actions import UpdateDataDocsAction

            # The checkpoint's UpdateDataDocsAction renders only this run's pages, where
            # build_data_docs() would re-render every result ever stored.
            checkpoint = context.checkpoints.add_or_update(
                gx.Checkpoint(
                    name=safe_name,
                    validation_definitions=[validation],
                    actions=[UpdateDataDocsAction(name="update_data_docs")],
                    result_format=result_format,
                )
            )
            run = checkpoint.run(batch_parameters=batch_parameters)
            result = next(iter(run.run_results.values()))
    specs = dict(indexed)
    for item in result.results:
        index = int(item.expectation_config.meta[_GATE_INDEX])
        outcomes[index] = _ge_outcome(specs[index], item, pii, private)
    for index, first in duplicate_of.items():
        if first in outcomes:
            outcomes[index] = replace(outcomes[first], kwargs=_safe_kwargs(specs[index], pii))
    return None if context_root is None else _data_docs_index(context.get_docs_sites_urls())


def _ge_context(gx: Any, context_root: str | None) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if context_root is None:
        context = gx.get_context(mode="ephemeral")
    else:
        context = gx.get_context(mode="file", project_root_dir=context_root)
        _limit_data_docs_index(context)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _limit_data_docs_index(context: Any) -> None:
    """Index only the newest results: GE's index page otherwise loads every stored result."""
    for site_name, site in (context.variables.data_docs_sites or {}).items():
        index = site.get("site_index_builder") or {"class_name": "DefaultSiteIndexBuilder"}
        if "validation_results_limit" not in index:
            index = {**index, "validation_results_limit": DATA_DOCS_INDEX_LIMIT}
            context.update_data_docs_site(site_name, {**site, "site_index_builder": index})


@contextlib.contextmanager
def _exclusive(context_root: str | None) -> Iterator[None]:
    """Serialize processes sharing a file context: GE rewrites great_expectations.yml per run."""
    if context_root is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    Path(context_root).mkdir(parents=True, exist_ok=True)
    with open(Path(context_root) / ".ml_platform_gate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_suite(context: Any, suite: Any) -> Any:
    """Store ``suite`` under its name, replacing any earlier one.

    Deleting first is much faster than ``add_or_update``, which compares every old expectation
    with every new one.
    """
    with contextlib.suppress(Exception):  # none stored yet under this name
        context.suites.delete(suite.name)
    return context.suites.add(suite)


def _ge_expectation(gx: Any, spec: ExpectationSpec, index: int) -> Any:
    class_name = "".join(part.capitalize() for part in spec.type.split("_"))
    kwargs = dict(spec.kwargs)
    kwargs["meta"] = {**kwargs.get("meta", {}), _GATE_INDEX: index}
    return getattr(gx.expectations, class_name)(**kwargs)


def _data_docs_index(sites: list[dict[str, Any]]) -> str | None:
    from urllib.parse import unquote, urlparse

    for site in sites:
        url = str(site.get("site_url") or "")
        if url:
            return unquote(urlparse(url).path) if url.startswith("file:") else url
    return None


def _ge_outcome(
    spec: ExpectationSpec, item: Any, pii: frozenset[str], private: bool
) -> ExpectationOutcome:
    result = dict(item.result or {})
    exception = _exception_message(item.exception_info)
    sample = list(result.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
    unexpected = result.get("unexpected_count")
    observed = _json_safe(result.get("observed_value"))
    if private:
        sample = [MASK] * min(int(unexpected or 0), SAMPLE_SIZE)
        if not _is_number(observed) and observed is not None:
            observed = MASK
        if exception is not None and not _MISSING_COLUMN.match(exception):
            exception = "Great Expectations raised an error (message withheld: PII column)"
    else:
        sample = [_mask_row(value, pii) for value in sample]
    return ExpectationOutcome(
        type=spec.type,
        kwargs=_safe_kwargs(spec, pii),
        success=bool(item.success),
        observed_value=observed,
        unexpected_count=None if unexpected is None else int(unexpected),
        unexpected_percent=_json_safe(result.get("unexpected_percent")),
        sample=_json_safe(sample),
        exception=exception,
        engine="great_expectations",
    )


def _mask_row(value: Any, pii: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if k in pii else v) for k, v in value.items()}
    return value


def _exception_message(info: Any) -> str | None:
    """The first exception message in GE's exception_info (flat or keyed by metric)."""
    if not isinstance(info, dict):
        return None
    entries: Iterable[Any] = [info] if "raised_exception" in info else info.values()
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def _error_outcome(
    spec: ExpectationSpec, pii: frozenset[str], message: str, private: bool
) -> ExpectationOutcome:
    if private:
        message = "Great Expectations raised an error (message withheld: PII column)"
    return ExpectationOutcome(
        type=spec.type,
        kwargs=_safe_kwargs(spec, pii),
        success=False,
        exception=message,
        engine="great_expectations",
    )
