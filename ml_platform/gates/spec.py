"""Gate declarations: the expectations a gate may use and how their arguments are checked.

An :class:`ExpectationSpec` is a GE expectation name plus GE's own arguments, checked against
the arguments GE accepts and normalized the way GE coerces them; a spec's ``gates.data`` section
is a :class:`DataGateSpec`. The spec loader imports this module when Dagster loads the code
location, so it imports only pydantic and the standard library.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ml_platform.core.helpers import close_matches

_IGNORE_ROW_IF = ("all_values_are_missing", "any_value_is_missing", "never")
_BOUND_KWARGS = ("min_value", "max_value", "strict_min", "strict_max")


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
COMMON_KWARGS = ("meta", "notes", "description")


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
            close = close_matches(value, known, n=3)
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
        return normalize_kwargs(kind, value)

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
    # Binary tasks: bounds on the share of positive labels; None means
    # ml_platform.gates.expectations.DEFAULT_LABEL_BALANCE.
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


def normalize_kwargs(kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check an expectation's arguments and coerce them as GE does.

    Args:
        kind: A key of :data:`SUPPORTED_EXPECTATIONS`.
        kwargs: The arguments as declared in the spec.

    Returns:
        The arguments with GE's coercions applied (numeric bounds as floats, counts as ints,
        value sets as lists).

    Raises:
        ValueError: An argument is unknown, missing, of the wrong type or out of range; the
            message names every problem and how to fix it.
    """
    signature = SUPPORTED_EXPECTATIONS[kind]
    allowed = (*signature.required, *signature.optional, *COMMON_KWARGS)
    problems: list[str] = []
    for key in kwargs:
        if key not in allowed:
            close = close_matches(key, allowed)
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
        if not is_number(value) or not 0.0 <= value <= 1.0:
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
        if is_number(value) and float(value).is_integer():
            return int(value)
        raise ValueError(f"{where} must be a whole number, got {value!r}")
    if is_number(value):
        return float(value)  # GE stores numeric bounds as floats (5 becomes 5.0)
    if bounds == "comparable" and isinstance(value, (str, datetime.date)):
        return value  # dates and date strings, for datetime columns
    raise ValueError(f"{where} must be a number, got {value!r}")


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (bools excluded), as GE's bounds accept."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
