"""Gate reports: the verdict on each expectation, safe to log and to show as metadata.

Values of PII columns never appear here: :func:`safe_kwargs` masks value sets that target them
and every engine masks observed values and samples as :data:`MASK`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ml_platform.core.helpers import json_safe
from ml_platform.gates.spec import COMMON_KWARGS, ExpectationSpec

MASK = "***"


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
        shown = {k: v for k, v in self.kwargs.items() if k not in COMMON_KWARGS}
        arguments = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        return f"{self.type}({arguments})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary."""
        return {
            "type": self.type,
            "kwargs": json_safe(self.kwargs),
            "success": self.success,
            "observed_value": json_safe(self.observed_value),
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": json_safe(self.unexpected_percent),
            "sample": json_safe(self.sample),
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


def targets_pii(spec: ExpectationSpec, pii: frozenset[str]) -> bool:
    """Whether ``spec`` reads a PII column (GE matches column names case-insensitively)."""
    folded = {p.casefold() for p in pii}
    return any(c in pii or c.casefold() in folded for c in spec.columns)


def safe_kwargs(spec: ExpectationSpec, pii: frozenset[str]) -> dict[str, Any]:
    """``spec``'s arguments for a report: the value set masked when it targets a PII column."""
    kwargs = dict(spec.kwargs)
    if "value_set" in kwargs and targets_pii(spec, pii):
        kwargs["value_set"] = MASK
    return kwargs


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
    text = repr(json_safe(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
