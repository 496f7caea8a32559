"""Performance drift: the primary metric on recently labelled rows against the evaluation's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ml_platform.core.helpers import JsonDataclass
from ml_platform.core.tasks import higher_is_better
from ml_platform.evaluation.metrics import compute_metrics


@dataclass
class PerformanceVerdict(JsonDataclass):
    """The primary metric now and at evaluation, and how much worse it got.

    Attributes:
        metric: the primary metric.
        current: its value on the labelled window rows (None when it could not be computed).
        reference: its value at the model version's evaluation.
        drop: how much worse ``current`` is, in the metric's units (positive = worse, for
            metrics where higher is better and where lower is better alike).
        rows: labelled rows in the window.
        status: ``ok``, ``drift`` (the drop exceeds ``max_drop``), ``insufficient_data``
            (too few rows, or the metric is undefined on them, such as AUC with one class).
        max_drop: the largest drop accepted, or None (numbers only: status stays ``ok``).
        reason: why, for any status but ``ok``.
    """

    metric: str
    current: float | None
    reference: float | None
    drop: float | None
    rows: int
    status: Literal["ok", "drift", "insufficient_data"]
    max_drop: float | None = None
    reason: str | None = None

    @property
    def drifted(self) -> bool:
        """Whether the drop exceeded ``max_drop``."""
        return self.status == "drift"


def performance_drift(
    task: str,
    truth: Any,
    prediction: Any,
    threshold: float,
    primary_metric: str,
    evaluation_value: float | None,
    min_rows: int,
    max_drop: float | None = None,
) -> PerformanceVerdict:
    """Compare the primary metric on labelled window rows with its value at evaluation.

    Args:
        task: the model's task.
        truth: the labels that arrived, encoded as the model's ``encode_labels`` returns them.
        prediction: the model's output on those rows (as ``compute_metrics`` takes it).
        threshold: the binary decision threshold (the spec's ``evaluation.threshold``).
        primary_metric: the metric compared.
        evaluation_value: its value in the version's evaluation (None when unknown).
        min_rows: fewer labelled rows give ``insufficient_data``.
        max_drop: the largest acceptable drop; beyond it the status is ``drift``.

    Returns:
        The verdict; ``drop`` is positive when the model got worse.
    """
    rows = len(truth)
    reference = None if evaluation_value is None else float(evaluation_value)

    def verdict(current: float | None, drop: float | None, status: Any, reason: str | None):
        return PerformanceVerdict(
            primary_metric, current, reference, drop, rows, status, max_drop, reason
        )

    if rows < min_rows:
        reason = f"{rows} labelled rows; a verdict needs at least {min_rows}"
        return verdict(None, None, "insufficient_data", reason)
    current = compute_metrics(task, truth, prediction, threshold).get(primary_metric)
    if current is None or not math.isfinite(current):
        reason = f"{primary_metric} is undefined on the {rows} labelled rows (one class?)"
        return verdict(None, None, "insufficient_data", reason)
    if reference is None or not math.isfinite(reference):
        return verdict(current, None, "insufficient_data", "no evaluation value to compare with")
    drop = reference - current if higher_is_better(primary_metric) else current - reference
    if max_drop is not None and drop > max_drop:
        reason = f"{primary_metric} {current:.4g} vs {reference:.4g} at evaluation: drop {drop:.4g}"
        return verdict(current, drop, "drift", f"{reason} > {max_drop:g}")
    return verdict(current, drop, "ok", None)
