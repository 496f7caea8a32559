"""Evidently 0.7: the drift report people read, and Evidently's own verdicts to compare with.

Evidently recomputes every test from raw rows, so the report runs on bounded samples; the
platform's verdicts come from ``drift.detect_drift``. Evidently is imported inside the functions,
and its warnings (SciPy's divide-by-zero on unseen categories, pandas notices) are silenced.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ml_platform.core import storage
from ml_platform.monitoring.reference import finite_numbers, sample_rows

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

REPORT_ROWS = 20_000


@dataclass(frozen=True)
class EvidentlyColumnResult:
    """Evidently's result for one column: method, score, threshold and verdict."""

    method: str
    score: float
    threshold: float
    drifted: bool


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings, NumPy floating-point notices and Evidently's loggers."""
    import numpy as np

    evidently_logger = logging.getLogger("evidently")
    level = evidently_logger.level
    evidently_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        evidently_logger.setLevel(level)


def run_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    include_tests: bool = True,
    methods: dict[str, str] | None = None,
    thresholds: dict[str, float] | None = None,
) -> Any:
    """Run ``Report([DataDriftPreset()])`` with the columns' kinds declared; its snapshot.

    Declaring the kinds keeps Evidently from guessing (it would take an integer column with
    at most 10 distinct values for categorical, and text for a string column with mostly
    distinct values). ``methods`` and ``thresholds`` are the preset's per-column overrides.
    """
    with quiet():
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(
            numerical_columns=list(numeric), categorical_columns=list(categorical)
        )
        columns = [*numeric, *categorical]
        current_data = Dataset.from_pandas(
            cast("pd.DataFrame", current[columns]), data_definition=definition
        )
        reference_data = Dataset.from_pandas(
            cast("pd.DataFrame", reference[columns]), data_definition=definition
        )
        preset = DataDriftPreset(
            per_column_method=methods or None,  # pyright: ignore[reportArgumentType]
            per_column_threshold=thresholds or None,
        )
        report = Report([preset], include_tests=include_tests)
        return report.run(current_data, reference_data)


def evidently_column_results(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    methods: dict[str, str] | None = None,
    thresholds: dict[str, float] | None = None,
) -> dict[str, EvidentlyColumnResult]:
    """Evidently's per-column drift method, score, threshold and verdict (its test status).

    Raises:
        ValueError: Evidently cannot judge a column (for example all values missing).
    """
    snapshot = run_drift_report(
        reference, current, numeric, categorical, methods=methods, thresholds=thresholds
    )
    content = snapshot.dict()
    drifted: dict[str, bool] = {}
    for test in content["tests"]:
        parameters = test.get("metric_config", {}).get("params", {})
        if parameters.get("type") == "evidently:metric_v2:ValueDrift":
            drifted[parameters["column"]] = test["status"] == "FAIL"
    results = {}
    for metric in content["metrics"]:
        config = metric["config"]
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            column = config["column"]
            results[column] = EvidentlyColumnResult(
                method=config["method"],
                score=float(metric["value"]),
                threshold=float(config["threshold"]),
                drifted=drifted[column],
            )
    return results


def evidently_column_verdicts(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> dict[str, bool]:
    """Evidently's own drift verdict per column (for agreement tests and benchmarks)."""
    results = evidently_column_results(reference, current, numeric, categorical)
    return {column: result.drifted for column, result in results.items()}


def usable_columns(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """The columns Evidently can report on, and why each other one was left out."""
    skipped: dict[str, str] = {}
    kept_numeric, kept_categorical = [], []
    for name in [*numeric, *categorical]:
        for side, frame in (("reference", reference), ("current", current)):
            if name not in frame.columns:
                skipped[name] = f"absent from the {side} sample"
            elif name in numeric:
                values, problem = finite_numbers(cast("pd.Series", frame[name]))
                if values is None:
                    skipped[name] = f"{side}: {problem}"
                elif len(values) == 0:
                    skipped[name] = f"no value in the {side} sample"
            elif frame[name].notna().sum() == 0:
                skipped[name] = f"no value in the {side} sample"
            if name in skipped:
                break
        else:
            (kept_numeric if name in numeric else kept_categorical).append(name)
    return kept_numeric, kept_categorical, skipped


def write_evidently_report(
    reference_sample: pd.DataFrame,
    current_sample: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    path: str,
    max_rows: int = REPORT_ROWS,
) -> str:
    """Write Evidently's data drift report (HTML) for at most ``max_rows`` rows of each side.

    Columns Evidently cannot judge (absent, without any value, text in a numeric column) are
    left out of the report and logged; ``drift.detect_drift`` reports them as errors.

    Args:
        reference_sample: reference rows (the sample stored with the model version).
        current_sample: rows of the scored window.
        numeric: numeric columns.
        categorical: categorical columns.
        path: where to write the HTML: a local path or a storage URL.
        max_rows: the most rows of each side given to Evidently (seeded sample beyond).

    Returns:
        The path written.

    Raises:
        ValueError: no column can be reported on.
    """
    reference_rows = sample_rows(reference_sample, max_rows)
    current_rows = sample_rows(current_sample, max_rows)
    kept_numeric, kept_categorical, skipped = usable_columns(
        reference_rows, current_rows, numeric, categorical
    )
    for name, reason in skipped.items():
        logger.warning("Evidently report leaves out column %r: %s", name, reason)
    if not kept_numeric and not kept_categorical:
        raise ValueError(f"no column can be shown in the drift report: {skipped}")
    import pandas as pd

    for name in kept_numeric:  # numbers stored as objects: give Evidently a numeric dtype
        for frame in (reference_rows, current_rows):
            if not pd.api.types.is_numeric_dtype(frame[name].dtype):
                frame[name] = pd.to_numeric(frame[name])
    snapshot = run_drift_report(reference_rows, current_rows, kept_numeric, kept_categorical)
    with quiet():
        html = snapshot.get_html_str(as_iframe=False)
    storage.write_bytes(path, html.encode())
    return path
