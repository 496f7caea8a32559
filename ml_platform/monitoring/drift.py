"""Drift verdicts of a scored window against a model version's reference statistics.

Per column, the test and threshold are the ones Evidently 0.7's ``DataDriftPreset`` chooses by
default (``evidently.legacy.calculations.stattests.registry._get_default_stattest``):

* reference of at most 1,000 values (missing and +-inf dropped first): K-S (p <= 0.05) for a
  numeric column; chi-squared (p < 0.05) for a categorical one, or the z-test (p < 0.05) when
  reference and window together hold at most 2 categories;
* larger reference: normed Wasserstein distance (>= 0.1) for a numeric column,
  Jensen-Shannon distance (>= 0.1) for a categorical one;
* a numeric column whose reference and window together hold at most 5 distinct values is
  tested as categorical (chi-squared / z below 1,000 rows, Jensen-Shannon above).

The dataset drifts when the share of drifted columns is at least ``drift_share`` (0.5), as
Evidently's ``DatasetDriftMetric``. Unlike Evidently, a window that cannot be judged gets a
verdict instead of an exception: fewer than ``min_rows`` rows is ``insufficient_data``; an
absent column, a column with no value, or text in a numeric column is an ``error`` with its
reason. Columns without an ``ok``/``drift`` verdict do not count in the drift share.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from ml_platform.monitoring import statistical_tests as tests
from ml_platform.monitoring.reference import (
    PREDICTION,
    CategoricalReference,
    ColumnReference,
    NumericReference,
    ReferenceStatistics,
    category_counts,
    finite_numbers,
    prediction_series,
    sorted_value_counts,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Status = Literal["ok", "drift", "insufficient_data", "error"]
SUPPORTED_TESTS: dict[str, frozenset[str]] = {
    kind: frozenset(name for name, test in tests.TESTS.items() if kind in test.kinds)
    for kind in ("numeric", "categorical")
}


@dataclass(frozen=True)
class ColumnDriftSettings:
    """A column's test and threshold; None keeps Evidently's default choice."""

    test: str | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        """Reject unknown tests and thresholds that are not positive numbers."""
        if self.test is not None and self.test not in tests.TESTS:
            raise ValueError(f"unknown drift test {self.test!r}; use one of {sorted(tests.TESTS)}")
        if self.threshold is not None and not (
            math.isfinite(self.threshold) and self.threshold > 0
        ):
            raise ValueError(f"drift threshold must be a positive number, got {self.threshold}")


@dataclass(frozen=True)
class DriftSettings:
    """How a window is judged.

    Attributes:
        drift_share: the dataset drifts when at least this share of columns drifted.
        min_rows: windows (and columns) with fewer rows get ``insufficient_data``.
        columns: per-column test and threshold overrides (``prediction`` for the output).
    """

    drift_share: float = 0.5
    min_rows: int = 100
    columns: dict[str, ColumnDriftSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Reject a drift share outside (0, 1] and a minimum below one row."""
        if not 0 < self.drift_share <= 1:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be at least 1, got {self.min_rows}")


@dataclass
class ColumnVerdict:
    """The verdict on one column (or on the prediction).

    Attributes:
        column: the column name.
        kind: ``numeric`` or ``categorical`` (as tested: a numeric column with at most 5
            distinct values is still ``numeric`` here, ``test`` says how it was tested).
        test: the test used, Evidently's name; None when no test ran.
        score: the test's distance or p-value; None when no test ran.
        threshold: the threshold compared with; None when no test ran.
        drifted: whether the column drifted (only ever True with status ``drift``).
        status: ``ok``, ``drift``, ``insufficient_data`` or ``error``.
        reason: why, for any status but ``ok``.
        rows: non-missing values of the column in the window.
        missing_share: share of window rows without a value.
        reference_missing_share: the same share in the reference.
        new_categories: categories in the window that the reference never had.
    """

    column: str
    kind: str
    test: str | None
    score: float | None
    threshold: float | None
    drifted: bool
    status: Status
    reason: str | None = None
    rows: int = 0
    missing_share: float | None = None
    reference_missing_share: float | None = None
    new_categories: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (non-finite numbers become None)."""
        result = asdict(self)
        for key in ("score", "threshold", "missing_share", "reference_missing_share"):
            result[key] = json_number(result[key])
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnVerdict:
        """Read what ``to_dict`` wrote."""
        return cls(**data)


@dataclass
class DriftResult:
    """The verdict on a window.

    Attributes:
        columns: one verdict per monitored input column.
        drift_share: drifted columns over columns with an ``ok``/``drift`` verdict.
        dataset_drift: whether ``drift_share`` reached the settings' threshold.
        prediction: the verdict on the model's output, or None when not monitored.
        rows: rows in the window.
        status: ``drift`` (dataset or prediction drift), ``ok``, or ``insufficient_data``.
        share_threshold: the drift share threshold applied.
        reason: why, when the status is ``insufficient_data``; otherwise the columns that
            could not be judged and why (None when every column was).
    """

    columns: list[ColumnVerdict]
    drift_share: float
    dataset_drift: bool
    prediction: ColumnVerdict | None
    rows: int
    status: Literal["ok", "drift", "insufficient_data"]
    share_threshold: float = 0.5
    reason: str | None = None

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted input columns."""
        return [verdict.column for verdict in self.columns if verdict.drifted]

    @property
    def prediction_drift(self) -> bool:
        """Whether the model's output drifted."""
        return self.prediction is not None and self.prediction.drifted

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict."""
        return {
            "columns": [verdict.to_dict() for verdict in self.columns],
            "drift_share": self.drift_share,
            "dataset_drift": self.dataset_drift,
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "rows": self.rows,
            "status": self.status,
            "share_threshold": self.share_threshold,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        """Read what ``to_dict`` wrote."""
        prediction = data.get("prediction")
        return cls(
            columns=[ColumnVerdict.from_dict(verdict) for verdict in data["columns"]],
            drift_share=float(data["drift_share"]),
            dataset_drift=bool(data["dataset_drift"]),
            prediction=None if prediction is None else ColumnVerdict.from_dict(prediction),
            rows=int(data["rows"]),
            status=data["status"],
            share_threshold=float(data.get("share_threshold", 0.5)),
            reason=data.get("reason"),
        )


def detect_drift(
    reference: ReferenceStatistics,
    window: pd.DataFrame,
    predictions: Any = None,
    settings: DriftSettings | None = None,
) -> DriftResult:
    """Judge a window against the reference, column by column, as Evidently's defaults would.

    Args:
        reference: the model version's reference statistics.
        window: the scored rows (at least the monitored input columns).
        predictions: the model's output on the window, in the form given to
            ``compute_reference`` (None: no prediction verdict).
        settings: drift share, minimum rows and per-column overrides.

    Returns:
        Per-column verdicts, the drift share, the dataset verdict and the prediction verdict.

    Raises:
        ValueError: a column's configured test does not apply to its kind.
    """
    settings = settings or DriftSettings()
    rows = len(window)
    too_small = rows < settings.min_rows
    verdicts = []
    for name, column in reference.columns.items():
        if too_small:
            verdicts.append(small_window_verdict(name, column, rows, settings.min_rows))
        elif name not in window.columns:
            verdicts.append(problem(name, column, "error", "the window has no such column", rows=0))
        else:
            verdicts.append(judge_column(name, column, cast("pd.Series", window[name]), settings))
    prediction = None
    if predictions is not None:
        prediction = judge_prediction(reference, predictions, settings, too_small)
    return summarize(verdicts, prediction, rows, settings)


def judge_prediction(
    reference: ReferenceStatistics, predictions: Any, settings: DriftSettings, too_small: bool
) -> ColumnVerdict:
    """The verdict on the model's output (an ``error`` when the reference has none)."""
    kind, series = prediction_series(predictions)
    if reference.prediction is None:
        reason = "the reference has no prediction distribution: retrain to record one"
        return ColumnVerdict(PREDICTION, kind, None, None, None, False, "error", reason)
    if kind != reference.prediction.kind:
        reason = (
            f"predictions are {kind} but the reference's are {reference.prediction.kind}: "
            "pass the model output in the form given to compute_reference"
        )
        return ColumnVerdict(PREDICTION, kind, None, None, None, False, "error", reason)
    if too_small or len(series) < settings.min_rows:
        return small_window_verdict(
            PREDICTION, reference.prediction, len(series), settings.min_rows
        )
    return judge_column(PREDICTION, reference.prediction, series, settings)


def judge_column(
    name: str, reference: ColumnReference, series: pd.Series, settings: DriftSettings
) -> ColumnVerdict:
    """The verdict on one column of the window."""
    rows = len(series)
    override = settings.columns.get(name, ColumnDriftSettings())
    if override.test is not None and reference.kind not in tests.TESTS[override.test].kinds:
        raise ValueError(
            f"drift test {override.test!r} configured for column {name!r} does not apply to "
            f"{reference.kind} columns; use one of {sorted(SUPPORTED_TESTS[reference.kind])}"
        )
    if reference.count == 0:
        return problem(name, reference, "error", "the reference has no value in this column")
    values, counts = None, {}
    if isinstance(reference, NumericReference):
        values, reason = finite_numbers(series)
        if values is None:
            return problem(name, reference, "error", f"expected numbers: {reason}")
        values.sort()
        present = len(values)
    else:
        try:
            counts = category_counts(series)
        except TypeError as error:
            return problem(name, reference, "error", f"values are not categories: {error}")
        present = sum(counts.values())
    missing = 1.0 - present / rows if rows else None
    if present == 0:
        reason = f"all {rows} values are missing in the window" if rows else "empty window"
        status: Status = "error" if rows else "insufficient_data"
        return problem(name, reference, status, reason, missing_share=missing)
    if present < settings.min_rows:
        reason = f"{present} values in the window; a verdict needs at least {settings.min_rows}"
        return problem(name, reference, "insufficient_data", reason, present, missing)
    if isinstance(reference, NumericReference) and values is not None:
        test, score, new = numeric_test(reference, values, override.test)
    elif isinstance(reference, CategoricalReference):
        test, score, new = categorical_test(reference, counts, override.test)
    else:  # unreachable: a numeric reference always has values here
        raise AssertionError(name)
    statistical_test = tests.TESTS[test]
    threshold = override.threshold or statistical_test.default_threshold
    drifted = statistical_test.drifted(score, threshold)
    return ColumnVerdict(
        column=name,
        kind=reference.kind,
        test=test,
        score=score,
        threshold=threshold,
        drifted=drifted,
        status="drift" if drifted else "ok",
        reason=explain(reference, statistical_test, score, threshold, drifted, new),
        rows=present,
        missing_share=missing,
        reference_missing_share=reference.missing_share,
        new_categories=new,
    )


def numeric_test(
    reference: NumericReference, values: np.ndarray, configured: str | None
) -> tuple[str, float, list[Any]]:
    """Test name, score and unseen values of a numeric column (values sorted and finite)."""
    distinct_together = math.inf
    if reference.unique <= tests.FEW_DISTINCT_VALUES:
        distinct = sorted_value_counts(values)[0]
        if len(distinct) <= tests.FEW_DISTINCT_VALUES:
            distinct_together = len(set(reference.values) | set(distinct.tolist()))
    test = configured or default_numeric_test(reference.count, distinct_together)
    if test == "wasserstein":
        return test, tests.wasserstein(reference, values), []
    if test == "ks":
        return test, tests.kolmogorov_smirnov(reference, values), []
    if reference.unique > tests.BIN_BY_VALUE_LIMIT:
        shares = tests.histogram_shares(reference, values)
        score = (
            tests.jensen_shannon(*shares)
            if test == "jensenshannon"
            else tests.population_stability_index(*shares)
        )
        return test, score, []
    distinct, counts = sorted_value_counts(values)
    by_value = dict(zip(distinct.tolist(), counts.tolist(), strict=True))
    reference_counts = dict(zip(reference.values, reference.weights, strict=True))
    new = [value for value in by_value if value not in reference_counts]
    return test, counts_test(test, reference_counts, by_value), new[:20]


def default_numeric_test(reference_rows: int, distinct_together: float) -> str:
    """Evidently's default test for a numeric column."""
    if distinct_together <= tests.FEW_DISTINCT_VALUES:
        if reference_rows <= tests.SMALL_REFERENCE_ROWS:
            return "chisquare" if distinct_together > 2 else "z"
        return "jensenshannon"
    return "ks" if reference_rows <= tests.SMALL_REFERENCE_ROWS else "wasserstein"


def categorical_test(
    reference: CategoricalReference, counts: dict[Any, int], configured: str | None
) -> tuple[str, float, list[Any]]:
    """Test name, score and unseen categories of a categorical column."""
    reference_counts = reference.frequencies
    new = [key for key in counts if key not in reference_counts]
    if configured:
        test = configured
    elif reference.count <= tests.SMALL_REFERENCE_ROWS:
        test = "chisquare" if len(reference_counts) + len(new) > 2 else "z"
    else:
        test = "jensenshannon"
    new.sort(key=lambda key: -counts[key])
    return test, counts_test(test, reference_counts, counts), new[:20]


def counts_test(test: str, reference: dict[Any, int], window: dict[Any, int]) -> float:
    """Score of a count-based test (chi-squared, z, Jensen-Shannon, PSI by value)."""
    if test == "chisquare":
        return tests.chi_squared(reference, window)
    if test == "z":
        return tests.z_test(reference, window)
    shares = tests.count_shares(reference, window)
    if test == "jensenshannon":
        return tests.jensen_shannon(*shares)
    return tests.population_stability_index(*shares)


def explain(
    reference: ColumnReference,
    test: tests.StatisticalTest,
    score: float,
    threshold: float,
    drifted: bool,
    new: list[Any],
) -> str | None:
    """The reason given with a verdict: what crossed, constant references, new categories."""
    parts = []
    if drifted:
        side = "at or above" if test.measures == "distance" else "below"
        parts.append(f"{test.name} {test.measures} {score:.4g} {side} {threshold:g}")
    if (
        isinstance(reference, NumericReference)
        and reference.std == 0
        and test.name == "wasserstein"
    ):
        parts.append(
            f"the reference is constant ({reference.minimum:g}): the distance is divided by "
            f"{tests.MIN_NORM}, as Evidently does, so any change drifts"
        )
    if new:
        parts.append(f"values never seen in the reference: {new}")
    return "; ".join(parts) or None


def small_window_verdict(
    name: str, reference: ColumnReference, rows: int, min_rows: int
) -> ColumnVerdict:
    """``insufficient_data`` for a window below ``min_rows``."""
    reason = f"the window has {rows} rows; a verdict needs at least {min_rows}"
    return problem(name, reference, "insufficient_data", reason, rows=rows)


def problem(
    name: str,
    reference: ColumnReference,
    status: Status,
    reason: str,
    rows: int = 0,
    missing_share: float | None = None,
) -> ColumnVerdict:
    """A verdict without a test: ``insufficient_data`` or ``error``, with its reason."""
    no_test = (None, None, None, False)  # test, score, threshold, drifted
    return ColumnVerdict(
        name, reference.kind, *no_test, status, reason, rows, missing_share, reference.missing_share
    )


def summarize(
    verdicts: list[ColumnVerdict],
    prediction: ColumnVerdict | None,
    rows: int,
    settings: DriftSettings,
) -> DriftResult:
    """The window's verdict from its columns' (Evidently's share rule)."""
    judged = [verdict for verdict in verdicts if verdict.status in ("ok", "drift")]
    drifted = sum(verdict.drifted for verdict in judged)
    share = drifted / len(judged) if judged else 0.0
    dataset_drift = bool(judged) and share >= settings.drift_share
    reason = None
    if rows < settings.min_rows:
        status = "insufficient_data"
        reason = f"the window has {rows} rows; a verdict needs at least {settings.min_rows}"
    elif not judged and not (prediction and prediction.status in ("ok", "drift")):
        status = "insufficient_data"
        reason = "no column could be judged: " + "; ".join(
            f"{verdict.column}: {verdict.reason}" for verdict in verdicts
        )
    else:
        drifting = dataset_drift or (prediction is not None and prediction.drifted)
        status = "drift" if drifting else "ok"
        unjudged = [verdict for verdict in verdicts if verdict.status not in ("ok", "drift")]
        if unjudged:
            reason = "not judged: " + "; ".join(
                f"{verdict.column} ({verdict.reason})" for verdict in unjudged
            )
    return DriftResult(
        columns=verdicts,
        drift_share=share,
        dataset_drift=dataset_drift,
        prediction=prediction,
        rows=rows,
        status=status,
        share_threshold=settings.drift_share,
        reason=reason,
    )


def json_number(value: float | None) -> float | None:
    """A float for JSON: NaN and infinities become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
