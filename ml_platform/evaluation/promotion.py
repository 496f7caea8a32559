"""The champion-versus-challenger decision: the single place promotion is decided."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_platform.core.tasks import higher_is_better

if TYPE_CHECKING:
    from ml_platform.evaluation.report import EvaluationReport
    from ml_platform.spec.model import ModelSpec


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote the evaluated version, and the reasons (one sentence each).

    Attributes:
        promote: True when the evaluated version should become the champion.
        reasons: why, for the audit log, the registry tags and the asset metadata.
    """

    promote: bool
    reasons: list[str]


def decide_promotion(report: EvaluationReport, spec: ModelSpec) -> PromotionDecision:
    """Whether the evaluated version should become the champion, and why.

    This is the single place promotion is decided; the gates of the evaluation (thresholds,
    regression against the champion, slice fairness) extend it. A version that failed a gate, or
    whose primary metric is undefined, is never promoted; without a champion a version that passed
    every gate is; otherwise it must beat the champion's primary metric by more than zero and by
    at least ``promotion.min_improvement``.

    Args:
        report: the evaluation of the candidate version (and of the champion on the same rows).
        spec: the model spec (its ``promotion.min_improvement``).

    Returns:
        The decision with its reasons.
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
    return PromotionDecision(gain > 0 and gain >= needed, [comparison])
