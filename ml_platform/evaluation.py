"""Task-appropriate metrics, per-slice metrics, and the champion-vs-challenger decision."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ml_platform.spec import LOWER_IS_BETTER, EvaluationGateSpec, ModelSpec

DEFAULT_REGRESSION_TOLERANCE = 0.01
EVALUATION_GATES = (
    "metrics_meet_thresholds",
    "no_regression_vs_champion",
    "slices_meet_thresholds",
    "latency_within_bound",
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def expected_calibration_error(
    y_true: np.ndarray, probability: np.ndarray, bins: int = 10
) -> float:
    """Weighted mean gap between predicted probability and observed rate over equal-width bins."""
    import numpy as np

    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    predicted = np.bincount(which, weights=probability, minlength=bins)
    observed = np.bincount(which, weights=y_true, minlength=bins)
    occupied = counts > 0
    gaps = np.abs(predicted[occupied] - observed[occupied]) / counts[occupied]
    return float(np.sum(gaps * counts[occupied]) / max(len(y_true), 1))


def compute_metrics(
    task: str, y_true: np.ndarray, prediction: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Metrics for one set of predictions.

    Binary: roc_auc, pr_auc, precision/recall/f1/accuracy at ``threshold``, log_loss,
    calibration_error (ECE), positive_rate. Multiclass: accuracy, macro_f1, log_loss.
    Regression: rmse, mae, r2. Metrics undefined on the data (AUC with one class) are NaN.
    """
    import numpy as np
    from sklearn import metrics

    y_true = np.asarray(y_true)
    result: dict[str, float] = {"rows": float(len(y_true))}
    if len(y_true) == 0:
        return result
    if task == "binary_classification":
        probability = np.clip(np.asarray(prediction, dtype=np.float64), 1e-7, 1 - 1e-7)
        predicted = (probability >= threshold).astype(int)
        both_classes = len(np.unique(y_true)) == 2
        precision, recall, f1, _ = metrics.precision_recall_fscore_support(
            y_true,
            predicted,
            average="binary",
            zero_division=0.0,  # pyright: ignore[reportArgumentType]
        )
        result |= {
            "roc_auc": metrics.roc_auc_score(y_true, probability) if both_classes else math.nan,
            "pr_auc": metrics.average_precision_score(y_true, probability)
            if both_classes
            else math.nan,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "accuracy": metrics.accuracy_score(y_true, predicted),
            "log_loss": metrics.log_loss(y_true, probability, labels=[0, 1]),
            "calibration_error": expected_calibration_error(y_true, probability),
            "positive_rate": float(np.mean(y_true)),
        }
    elif task == "multiclass_classification":
        probability = np.asarray(prediction, dtype=np.float64)
        predicted = probability.argmax(axis=1)
        result |= {
            "accuracy": metrics.accuracy_score(y_true, predicted),
            "macro_f1": metrics.f1_score(
                y_true,
                predicted,
                average="macro",
                zero_division=0.0,  # pyright: ignore[reportArgumentType]
            ),
            "log_loss": metrics.log_loss(
                y_true, np.clip(probability, 1e-7, 1), labels=list(range(probability.shape[1]))
            ),
        }
    else:
        predicted = np.asarray(prediction, dtype=np.float64)
        result |= {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, predicted))),
            "mae": metrics.mean_absolute_error(y_true, predicted),
            "r2": metrics.r2_score(y_true, predicted) if len(y_true) > 1 else math.nan,
        }
    return {name: float(value) for name, value in result.items()}


def slice_metrics(
    task: str,
    frame: pd.DataFrame,
    y_true: np.ndarray,
    prediction: np.ndarray,
    slice_columns: list[str],
    threshold: float = 0.5,
    min_rows: int = 30,
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of each slice column: ``{column: {value: metrics}}``.

    Slices with fewer than ``min_rows`` rows are reported with their row count only: their metrics
    would be noise.
    """
    import numpy as np

    result: dict[str, dict[str, dict[str, float]]] = {}
    for column in slice_columns:
        values = frame[column].astype("string").fillna("<null>").to_numpy()
        per_value: dict[str, dict[str, float]] = {}
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() < min_rows:
                per_value[str(value)] = {"rows": float(mask.sum())}
                continue
            part = prediction[mask] if np.ndim(prediction) == 1 else prediction[mask, :]
            per_value[str(value)] = compute_metrics(task, y_true[mask], part, threshold)
        result[column] = per_value
    return result


@dataclass(frozen=True)
class EvaluationReport:
    """The evaluation of one model version, and of the champion on the same test rows."""

    model: str
    version: str
    snapshot_id: str
    primary_metric: str
    metrics: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]]
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    champion_slices: dict[str, dict[str, dict[str, float]]] | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def gate_results(self) -> list[GateResult]:
        return [GateResult(**gate) for gate in self.gates]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        return cls(**data)


@dataclass(frozen=True)
class GateResult:
    """One evaluation gate: its verdict, a one-line reason and the numbers behind it."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _worse_by(metric: str, value: float, reference: float) -> float:
    """How much worse ``value`` is than ``reference`` (negative when better)."""
    return reference - value if higher_is_better(metric) else value - reference


def evaluation_gates(
    primary_metric: str,
    metrics: dict[str, float],
    slices: dict[str, dict[str, dict[str, float]]],
    champion_metrics: dict[str, float] | None,
    gates: EvaluationGateSpec,
    champion_error: str | None = None,
) -> list[GateResult]:
    """Every evaluation gate's verdict, in ``EVALUATION_GATES`` order.

    An undefined (NaN) metric fails any gate that names it: a number that cannot be computed
    proves nothing. Without a champion the regression gate passes (there is nothing to regress
    from); without configured thresholds a gate passes and says so.
    """
    results: list[GateResult] = []

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
    results.append(
        GateResult(
            "metrics_meet_thresholds",
            not failures,
            "; ".join(failures)
            if failures
            else ("all thresholds met" if checked else "no thresholds configured"),
            {"checked": checked},
        )
    )

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
    results.append(
        GateResult(
            "no_regression_vs_champion",
            not failures,
            "; ".join(failures)
            if failures
            else (
                "within tolerance of the champion" if compared else "no champion to compare with"
            ),
            {"compared": compared},
        )
    )

    failures, slice_numbers = [], {}
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
            measured = [m[metric] for m in values.values() if metric in m]
            if not measured:
                failures.append(f"{gate.column}: no slice has enough rows to measure {metric}")
                continue
            disparity = max(measured) - min(measured)
            slice_numbers[f"{gate.column}.{metric}.disparity"] = disparity
            if not disparity <= bound:
                failures.append(
                    f"{gate.column}: {metric} gap between slices {disparity:.4f} > {bound} "
                    f"(min {min(measured):.4f}, max {max(measured):.4f})"
                )
    results.append(
        GateResult(
            "slices_meet_thresholds",
            not failures,
            "; ".join(failures)
            if failures
            else ("every slice within bounds" if gates.slices else "no slice gates configured"),
            {"measured": slice_numbers},
        )
    )

    latency = metrics.get("latency_ms_per_1k_rows", math.nan)
    bound = gates.max_latency_ms_per_1k_rows
    passed = bound is None or latency <= bound
    results.append(
        GateResult(
            "latency_within_bound",
            passed,
            f"{latency:.2f} ms per 1k rows" + (f" (max {bound})" if bound is not None else ""),
            {"latency_ms_per_1k_rows": latency, "max": bound},
        )
    )
    return results


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reasons: list[str]


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def decide_promotion(report: EvaluationReport, spec: ModelSpec) -> PromotionDecision:
    """Whether the evaluated version should become the champion, and why.

    This is the single place promotion is decided; the gates of the evaluation (thresholds,
    regression against the champion, slice fairness) extend it.
    """
    failed = [gate for gate in report.gate_results() if not gate.passed]
    if failed:
        return PromotionDecision(
            False, [f"gate {gate.name} failed: {gate.description}" for gate in failed]
        )
    metric = report.primary_metric
    value = report.metrics.get(metric, math.nan)
    if math.isnan(value):
        return PromotionDecision(False, [f"{metric} is undefined on the test split"])
    if report.champion_version is None or report.champion_metrics is None:
        return PromotionDecision(True, [f"no champion yet; {metric}={value:.4f}"])
    if report.champion_version == report.version:
        return PromotionDecision(False, [f"version {report.version} is already the champion"])
    champion = report.champion_metrics.get(metric, math.nan)
    if math.isnan(champion):
        return PromotionDecision(
            True,
            [f"champion v{report.champion_version} {metric} undefined; challenger {value:.4f}"],
        )
    gain = value - champion if higher_is_better(metric) else champion - value
    needed = spec.promotion.min_improvement
    comparison = (
        f"challenger v{report.version} {metric}={value:.4f} vs champion "
        f"v{report.champion_version} {metric}={champion:.4f} (gain {gain:+.4f}, needed "
        f"{needed:+.4f})"
    )
    if gain > 0 and gain >= needed:
        return PromotionDecision(True, [comparison])
    return PromotionDecision(False, [comparison])
