"""The blocking evaluation gates: thresholds, regression against the champion, slices, latency.

A version that fails any of them is registered but never promoted. Each gate returns a
:class:`GateResult` with its verdict, a one-line reason and the numbers behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml_platform.core.tasks import higher_is_better

if TYPE_CHECKING:
    from ml_platform.spec.model import EvaluationGateSpec

DEFAULT_REGRESSION_TOLERANCE = 0.01
EVALUATION_GATES = (
    "metrics_meet_thresholds",
    "no_regression_vs_champion",
    "slices_meet_thresholds",
    "latency_within_bound",
)

Slices = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class GateResult:
    """One evaluation gate: its verdict, a one-line reason and the numbers behind it.

    Attributes:
        name: one of ``EVALUATION_GATES``.
        passed: whether the version passes the gate.
        description: why, in one line (the failures, or what was checked).
        metadata: the numbers the verdict rests on, JSON-serializable.
    """

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def evaluation_gates(
    primary_metric: str,
    metrics: dict[str, float],
    slices: Slices,
    champion_metrics: dict[str, float] | None,
    gates: EvaluationGateSpec,
    champion_error: str | None = None,
) -> list[GateResult]:
    """Every evaluation gate's verdict, in ``EVALUATION_GATES`` order.

    An undefined (NaN) metric fails any gate that names it: a number that cannot be computed
    proves nothing. Without a champion the regression gate passes (there is nothing to regress
    from); without configured thresholds a gate passes and says so.

    Args:
        primary_metric: the spec's primary metric, compared with the champion by default.
        metrics: the challenger's test metrics (with ``latency_ms_per_1k_rows``).
        slices: the challenger's per-slice metrics (``slice_metrics``).
        champion_metrics: the champion's metrics on the same rows, or None without a champion.
        gates: the spec's ``gates.evaluation``.
        champion_error: why the champion could not be evaluated, if it could not; it fails the
            regression gate.

    Returns:
        One result per gate of ``EVALUATION_GATES``, in that order.
    """
    return [
        _thresholds_gate(metrics, gates),
        _regression_gate(primary_metric, metrics, champion_metrics, gates, champion_error),
        _slices_gate(slices, gates),
        _latency_gate(metrics, gates),
    ]


def _verdict(name: str, failures: list[str], success: str, metadata: dict[str, Any]) -> GateResult:
    """The result of a gate that passes when nothing failed; ``success`` describes a pass."""
    return GateResult(name, not failures, "; ".join(failures) if failures else success, metadata)


def _thresholds_gate(metrics: dict[str, float], gates: EvaluationGateSpec) -> GateResult:
    failures, checked = [], {}
    for metric, bound in gates.min.items():
        value = metrics.get(metric, math.nan)
        checked[metric] = {"value": value, "min": bound}
        if not value >= bound:
            failures.append(f"{metric}={value:.4f} < min {bound}")
    for metric, bound in gates.max.items():
        value = metrics.get(metric, math.nan)
        checked[metric] = {"value": value, "max": bound}
        if not value <= bound:
            failures.append(f"{metric}={value:.4f} > max {bound}")
    success = "all thresholds met" if checked else "no thresholds configured"
    return _verdict("metrics_meet_thresholds", failures, success, {"checked": checked})


def _worse_by(metric: str, value: float, reference: float) -> float:
    """How much worse ``value`` is than ``reference`` (negative when better)."""
    return reference - value if higher_is_better(metric) else value - reference


def _regression_gate(
    primary_metric: str,
    metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    gates: EvaluationGateSpec,
    champion_error: str | None,
) -> GateResult:
    tolerances = dict(gates.max_regression) or {primary_metric: DEFAULT_REGRESSION_TOLERANCE}
    failures, compared = [champion_error] if champion_error else [], {}
    if champion_metrics is not None:
        for metric, tolerance in tolerances.items():
            value = metrics.get(metric, math.nan)
            reference = champion_metrics.get(metric, math.nan)
            worse = _worse_by(metric, value, reference)
            compared[metric] = {
                "challenger": value,
                "champion": reference,
                "worse_by": worse,
                "tolerance": tolerance,
            }
            if math.isnan(reference):
                continue  # the champion's number is undefined: nothing to regress from
            if not worse <= tolerance:
                failures.append(
                    f"{metric}: challenger {value:.4f} vs champion {reference:.4f} "
                    f"(worse by {worse:.4f} > tolerance {tolerance})"
                )
    success = "within tolerance of the champion" if compared else "no champion to compare with"
    return _verdict("no_regression_vs_champion", failures, success, {"compared": compared})


def _slices_gate(slices: Slices, gates: EvaluationGateSpec) -> GateResult:
    failures: list[str] = []
    measured: dict[str, float] = {}
    for gate in gates.slices:
        values = slices.get(gate.column, {})
        for metric, bound in gate.min.items():
            for value_name, value_metrics in values.items():
                if metric not in value_metrics:
                    continue  # too few rows in this slice to measure
                value = value_metrics[metric]
                if not value >= bound:
                    failures.append(f"{gate.column}={value_name}: {metric}={value:.4f} < {bound}")
        for metric, bound in gate.max_disparity.items():
            numbers = [m[metric] for m in values.values() if metric in m]
            if not numbers:
                failures.append(f"{gate.column}: no slice has enough rows to measure {metric}")
                continue
            disparity = max(numbers) - min(numbers)
            measured[f"{gate.column}.{metric}.disparity"] = disparity
            if not disparity <= bound:
                failures.append(
                    f"{gate.column}: {metric} gap between slices {disparity:.4f} > {bound} "
                    f"(min {min(numbers):.4f}, max {max(numbers):.4f})"
                )
    success = "every slice within bounds" if gates.slices else "no slice gates configured"
    return _verdict("slices_meet_thresholds", failures, success, {"measured": measured})


def _latency_gate(metrics: dict[str, float], gates: EvaluationGateSpec) -> GateResult:
    latency = metrics.get("latency_ms_per_1k_rows", math.nan)
    bound = gates.max_latency_ms_per_1k_rows
    passed = bound is None or latency <= bound
    return GateResult(
        "latency_within_bound",
        passed,
        f"{latency:.2f} ms per 1k rows" + (f" (max {bound})" if bound is not None else ""),
        {"latency_ms_per_1k_rows": latency, "max": bound},
    )
