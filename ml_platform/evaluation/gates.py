"""The blocking evaluation gates: thresholds, regression against the champion, slices, latency.

A version that fails any of them is registered but never promoted. Each gate returns a
:class:`GateResult` with its verdict, a one-line reason and the numbers behind it: one
:class:`GateCheck` per comparison it made (what was measured, the bound, which side of it passes),
so the catalog can show each number against its bound and plot them over time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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
Side = Literal["min", "max"]


@dataclass(frozen=True)
class GateCheck:
    """One comparison a gate made: a measured number against its bound.

    Attributes:
        check: what was measured, e.g. ``roc_auc`` or ``region=north: recall``.
        measured: the number (NaN when it could not be computed: the check fails).
        bound: the bound it is held to; None when none is configured (the check passes, the
            number is still shown).
        side: ``min`` (measured must be >= bound) or ``max`` (<= bound).
        passed: whether the measured number is on the right side of the bound.
    """

    check: str
    measured: float
    bound: float | None
    side: Side
    passed: bool

    @property
    def margin(self) -> float:
        """How far inside its bound the measured number is (negative: outside; NaN: -inf)."""
        if self.bound is None:
            return math.inf
        margin = self.measured - self.bound if self.side == "min" else self.bound - self.measured
        return -math.inf if math.isnan(margin) else margin

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data (what an evaluation report stores)."""
        return asdict(self)


def _check(check: str, measured: float, bound: float | None, side: Side) -> GateCheck:
    """A check of ``measured`` against ``bound``; NaN fails (``not nan >= x`` is True)."""
    if bound is None:
        return GateCheck(check, float(measured), None, side, True)
    passed = measured >= bound if side == "min" else measured <= bound
    return GateCheck(check, float(measured), float(bound), side, bool(passed))


@dataclass(frozen=True)
class GateResult:
    """One evaluation gate: its verdict, a one-line reason and the numbers behind it.

    Attributes:
        name: one of ``EVALUATION_GATES``.
        passed: whether the version passes the gate.
        description: why, in one line (the failures, or what was checked).
        metadata: the numbers the verdict rests on, JSON-serializable.
        checks: each comparison the gate made (``GateCheck.to_dict()``), in the order made;
            empty when the gate had nothing to compare (no bound configured, no champion), and in
            reports stored before checks were recorded.
    """

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def gate_checks(self) -> list[GateCheck]:
        """The comparisons as ``GateCheck`` objects, in the order made."""
        return [GateCheck(**check) for check in self.checks]

    def binding_check(self) -> GateCheck | None:
        """The comparison closest to failing (a failed one if any): the gate's headline number.

        Returns:
            The check with the smallest margin, or None when the gate compared nothing.
        """
        return min(self.gate_checks(), key=lambda check: check.margin, default=None)


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
        _thresholds_gate(primary_metric, metrics, gates),
        _regression_gate(primary_metric, metrics, champion_metrics, gates, champion_error),
        _slices_gate(primary_metric, slices, gates),
        _latency_gate(metrics, gates),
    ]


def _verdict(
    name: str,
    failures: list[str],
    success: str,
    metadata: dict[str, Any],
    checks: list[GateCheck],
) -> GateResult:
    """The result of a gate that passes when nothing failed; ``success`` describes a pass."""
    return GateResult(
        name,
        not failures,
        "; ".join(failures) if failures else success,
        metadata,
        [check.to_dict() for check in checks],
    )


def _thresholds_gate(
    primary_metric: str, metrics: dict[str, float], gates: EvaluationGateSpec
) -> GateResult:
    failures, checked, checks = [], {}, []
    for metric, bound in gates.min.items():
        value = metrics.get(metric, math.nan)
        checked[metric] = {"value": value, "min": bound}
        checks.append(_check(metric, value, bound, "min"))
        if not value >= bound:
            failures.append(f"{metric}={value:.4f} < min {bound}")
    for metric, bound in gates.max.items():
        value = metrics.get(metric, math.nan)
        checked[metric] = {"value": value, "max": bound}
        checks.append(_check(metric, value, bound, "max"))
        if not value <= bound:
            failures.append(f"{metric}={value:.4f} > max {bound}")
    if not checks:  # nothing bounded: still show the primary metric, unbounded
        side: Side = "min" if higher_is_better(primary_metric) else "max"
        checks.append(_check(primary_metric, metrics.get(primary_metric, math.nan), None, side))
    success = "all thresholds met" if checked else "no thresholds configured"
    return _verdict("metrics_meet_thresholds", failures, success, {"checked": checked}, checks)


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
    checks: list[GateCheck] = []
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
            checks.append(_check(f"{metric} worse than champion by", worse, tolerance, "max"))
            if not worse <= tolerance:
                failures.append(
                    f"{metric}: challenger {value:.4f} vs champion {reference:.4f} "
                    f"(worse by {worse:.4f} > tolerance {tolerance})"
                )
    success = "within tolerance of the champion" if compared else "no champion to compare with"
    return _verdict("no_regression_vs_champion", failures, success, {"compared": compared}, checks)


def _slices_gate(primary_metric: str, slices: Slices, gates: EvaluationGateSpec) -> GateResult:
    failures: list[str] = []
    measured: dict[str, float] = {}
    checks: list[GateCheck] = []
    for gate in gates.slices:
        values = slices.get(gate.column, {})
        for metric, bound in gate.min.items():
            for value_name, value_metrics in values.items():
                if metric not in value_metrics:
                    continue  # too few rows in this slice to measure
                value = value_metrics[metric]
                checks.append(_check(f"{gate.column}={value_name}: {metric}", value, bound, "min"))
                if not value >= bound:
                    failures.append(f"{gate.column}={value_name}: {metric}={value:.4f} < {bound}")
        for metric, bound in gate.max_disparity.items():
            numbers = [m[metric] for m in values.values() if metric in m]
            if not numbers:
                failures.append(f"{gate.column}: no slice has enough rows to measure {metric}")
                checks.append(_check(f"{gate.column}: {metric} disparity", math.nan, bound, "max"))
                continue
            disparity = max(numbers) - min(numbers)
            measured[f"{gate.column}.{metric}.disparity"] = disparity
            checks.append(_check(f"{gate.column}: {metric} disparity", disparity, bound, "max"))
            if not disparity <= bound:
                failures.append(
                    f"{gate.column}: {metric} gap between slices {disparity:.4f} > {bound} "
                    f"(min {min(numbers):.4f}, max {max(numbers):.4f})"
                )
    bounded = {(gate.column, metric) for gate in gates.slices for metric in gate.max_disparity}
    for column, values in slices.items():  # the primary metric's gap, shown even if unbounded
        numbers = [m[primary_metric] for m in values.values() if primary_metric in m]
        if numbers and (column, primary_metric) not in bounded:
            gap = max(numbers) - min(numbers)
            checks.append(_check(f"{column}: {primary_metric} disparity", gap, None, "max"))
    success = "every slice within bounds" if gates.slices else "no slice gates configured"
    return _verdict("slices_meet_thresholds", failures, success, {"measured": measured}, checks)


def _latency_gate(metrics: dict[str, float], gates: EvaluationGateSpec) -> GateResult:
    latency = metrics.get("latency_ms_per_1k_rows", math.nan)
    bound = gates.max_latency_ms_per_1k_rows
    passed = bound is None or latency <= bound
    checks = [_check("latency_ms_per_1k_rows", latency, bound, "max")]
    return GateResult(
        "latency_within_bound",
        passed,
        f"{latency:.2f} ms per 1k rows" + (f" (max {bound})" if bound is not None else ""),
        {"latency_ms_per_1k_rows": latency, "max": bound},
        [check.to_dict() for check in checks],
    )
