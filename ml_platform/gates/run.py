"""Running a gate: a DataFrame checked against its expectations, in one of two modes.

Both modes give the same verdict for every expectation:

- ``"ge"`` validates every expectation with Great Expectations (the reference).
- ``"fast"`` (the default) evaluates every expectation with the vectorized evaluators of
  :mod:`ml_platform.gates.fast`, then asks GE only about the expectations that failed (and those
  without a fast evaluator) for its diagnostics; GE's verdict wins where they differ. Clean data
  never imports Great Expectations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from ml_platform.gates.fast import Columns, fast_evaluate, fast_outcome
from ml_platform.gates.great_expectations import validate_with_ge
from ml_platform.gates.report import ExpectationOutcome, GateReport
from ml_platform.gates.spec import ExpectationSpec

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

Mode = Literal["fast", "ge"]


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

    Raises:
        ValueError: ``mode`` is neither ``"fast"`` nor ``"ge"``.
    """
    if mode not in ("fast", "ge"):
        raise ValueError(f"mode must be 'fast' or 'ge', got {mode!r}")
    start = time.perf_counter()
    specs = list(expectations)
    pii = frozenset(pii_columns)
    outcomes: dict[int, ExpectationOutcome] = {}
    fast_verdicts: dict[int, bool] = {}
    if mode == "fast":
        to_ge = _fast_pass(frame, specs, pii, outcomes, fast_verdicts)
    else:
        to_ge = list(range(len(specs)))
    data_docs_path = None
    if to_ge:
        ge_outcomes, data_docs_path = validate_with_ge(
            frame, [(i, specs[i]) for i in to_ge], name, pii, context_root, full=mode == "ge"
        )
        _warn_on_disagreement(name, fast_verdicts, ge_outcomes)
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


def _fast_pass(
    frame: pd.DataFrame,
    specs: list[ExpectationSpec],
    pii: frozenset[str],
    outcomes: dict[int, ExpectationOutcome],
    fast_verdicts: dict[int, bool],
) -> list[int]:
    """Record the fast passes in ``outcomes``; returns the positions GE must check.

    A fast failure is recorded in ``fast_verdicts`` so a disagreement with GE can be reported.
    """
    columns = Columns(frame)
    to_ge: list[int] = []
    for index, spec in enumerate(specs):
        fast = fast_evaluate(columns, spec)
        if fast is not None and fast.success:
            outcomes[index] = fast_outcome(spec, fast, pii)
        else:
            to_ge.append(index)
            if fast is not None:
                fast_verdicts[index] = fast.success
    return to_ge


def _warn_on_disagreement(
    name: str, fast_verdicts: dict[int, bool], ge_outcomes: dict[int, ExpectationOutcome]
) -> None:
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
