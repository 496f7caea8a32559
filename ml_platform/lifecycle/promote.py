"""Promote: move the ``champion`` alias when the decision says so, or by an audited override."""

from __future__ import annotations

from ml_platform.core.audit import AuditLog
from ml_platform.evaluation.promotion import PromotionDecision, decide_promotion
from ml_platform.lifecycle.records import StepContext, current_evaluation
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import (
    TAG_OVERRIDE_BY,
    TAG_OVERRIDE_REASON,
    TAG_OVERRIDE_RUN,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
)
from ml_platform.spec.model import ModelSpec

MIN_OVERRIDE_REASON = 15
"""The shortest reason an override is accepted with (characters)."""


def promote(
    spec: ModelSpec,
    step: StepContext,
) -> tuple[PromotionDecision, str | None]:
    """Move the ``champion`` alias to the evaluated version when the decision says so.

    Args:
        spec: The model spec (its promotion policy).
        step: The engines and run of this step (`StepContext`).

    Returns:
        The decision and the champion version after it.

    Raises:
        FileNotFoundError: The model has no evaluation.
    """
    report = current_evaluation(step.settings, spec.name)
    decision = decide_promotion(report, spec)
    action = "promoted" if decision.promote else "not_promoted"
    if decision.promote:
        step.registry.set_champion(spec.name, report.version)
    step.registry.tag_version(
        spec.name,
        report.version,
        {TAG_PROMOTION: action, TAG_PROMOTION_REASON: "; ".join(decision.reasons)},
    )
    step.audit.record(
        spec.name,
        action,
        model_version=report.version,
        data_snapshot_id=report.snapshot_id,
        dagster_run_id=step.dagster_run_id,
        details={"reasons": decision.reasons, "previous_champion": report.champion_version},
    )
    for reason in decision.reasons:
        step.log(reason)
    return decision, step.registry.champion_version(spec.name)


def override_promotion(
    spec: ModelSpec,
    version: str,
    reason: str,
    requested_by: str,
    *,
    registry: ModelRegistry,
    audit: AuditLog,
    dagster_run_id: str | None = None,
) -> str | None:
    """Make ``version`` the champion regardless of the gates: explicit, explained and audited.

    Args:
        spec: The model spec.
        version: The registered version to make champion.
        reason: Why the gates should not apply; at least ``MIN_OVERRIDE_REASON`` characters.
        requested_by: Who takes responsibility for the override.
        registry: The MLflow backend holding the versions and the alias.
        audit: The audit log that records the override.
        dagster_run_id: The Dagster run of the override job.

    Returns:
        The previous champion version.

    Raises:
        ValueError: no reason, no requester, or the version does not exist.
    """
    reason = reason.strip()
    if len(reason) < MIN_OVERRIDE_REASON:
        raise ValueError(
            f"an override needs a reason of at least {MIN_OVERRIDE_REASON} characters "
            f"(got {reason!r}); say why the gates should not apply"
        )
    if not requested_by.strip():
        raise ValueError("an override needs requested_by: who takes responsibility for it")
    if str(version) not in registry.registered_versions(spec.name):
        raise ValueError(f"model '{spec.name}' has no version {version!r}")
    previous = registry.champion_version(spec.name)
    registry.set_champion(spec.name, str(version))
    registry.tag_version(
        spec.name,
        str(version),
        {
            TAG_PROMOTION: "override",
            TAG_OVERRIDE_REASON: reason,
            TAG_OVERRIDE_BY: requested_by,
            TAG_OVERRIDE_RUN: dagster_run_id or "",
        },
    )
    audit.record(
        spec.name,
        "override_promoted",
        model_version=str(version),
        dagster_run_id=dagster_run_id,
        details={"reason": reason, "requested_by": requested_by, "previous_champion": previous},
    )
    return previous
