"""Promote: move the ``champion`` alias when the decision says so, or by an audited override.

The alias moves by compare-and-set under the audit log's lock ``champion:<model>``
(``AuditLog.exclusive``): inside it the alias is read, and a promotion whose evaluation compared
with another champion than the current one is refused ("champion moved from vX to vY since
evaluation; re-run evaluation"); the audit entry is written on the locked connection, then the
alias moves, then both commit: an alias that failed to move leaves no ``promoted`` entry, and
concurrent promotions form one chain (each entry's ``previous_champion`` is the one before).

An alias moved outside the platform (``lifecycle.champion_audit``) is recorded and alerted here
too. The promotion is then decided by the gates as usual: the evaluation compared the candidate
with the alias's actual version (what serves today), so a better candidate replaces it with an
audited promotion, which makes the alias explained again; a candidate that is not better leaves
the unexplained champion in place, and scoring keeps refusing it until an override or a
promotion.

``move_champion`` is that one path; the gates use it (``promote``) and so does a canary judged
on live traffic (``lifecycle.deploy.promote_canary``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.evaluation.promotion import PromotionDecision, decide_promotion
from ml_platform.evaluation.report import EvaluationReport
from ml_platform.lifecycle.champion_audit import (
    ChampionCheck,
    alert_recorded,
    champion_lock,
    check_champion,
    record_unexplained,
)
from ml_platform.lifecycle.evaluate import evaluation_of, run_version
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


def _shown(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


def _this_runs_evaluation(spec: ModelSpec, step: StepContext) -> EvaluationReport:
    """The evaluation of the version this run trained (else of the newest trained version)."""
    version, _ = run_version(spec, step)
    try:
        return evaluation_of(step, spec.name, version)
    except FileNotFoundError:
        # Evaluated before reports were kept per version: only the current report has it.
        report = current_evaluation(step.settings, spec.name)
        if report.version != version:
            raise
        return report


def promote(
    spec: ModelSpec,
    step: StepContext,
) -> tuple[PromotionDecision, str | None]:
    """Move the ``champion`` alias to this run's evaluated version when the decision says so.

    The evaluated version is the one this Dagster run trained (its evaluation is read for that
    version), else the model's current evaluation. The alias moves only if it still points at
    the champion the evaluation compared with (compare-and-set under ``champion:<model>``);
    otherwise the version is ``not_promoted`` with the reason.

    Args:
        spec: The model spec (its promotion policy).
        step: The engines and run of this step (`StepContext`).

    Returns:
        The decision and the champion version after it.

    Raises:
        FileNotFoundError: The version has no evaluation.
        RegistryUnavailableError: MLflow could not say where the alias is (nothing moves).
    """
    report = _this_runs_evaluation(spec, step)
    decision, check = move_champion(
        spec,
        step,
        report.version,
        decide_promotion(report, spec),
        expected_champion=report.champion_version,
        moved_since="evaluation; re-run evaluation",
        data_snapshot_id=report.snapshot_id,
        details={"evaluated_against": report.champion_version},
    )
    return decision, report.version if decision.promote else check.alias_version


def move_champion(
    spec: ModelSpec,
    step: StepContext,
    version: str,
    decision: PromotionDecision,
    *,
    expected_champion: str | None,
    moved_since: str,
    data_snapshot_id: str | None = None,
    details: dict[str, Any] | None = None,
    on_move: Callable[[], None] | None = None,
) -> tuple[PromotionDecision, ChampionCheck]:
    """The one promotion path: compare-and-set the ``champion`` alias, audited with its reasons.

    Under the champion lock the alias is read and compared with the audit log (an alias moved
    outside the platform is recorded, then alerted after the lock); a promotion is refused when
    the alias no longer points at ``expected_champion``. The ``promoted`` or ``not_promoted``
    entry is written on the locked connection, then the alias moves (and ``on_move`` runs),
    then both commit: an alias that failed to move leaves no ``promoted`` entry. Afterwards the
    version is tagged with the outcome and the reasons are logged.

    Args:
        spec: The model spec.
        step: The engines and run of this step (`StepContext`).
        version: The version to make champion when the decision says so.
        decision: Whether to promote it, and why (gates, or canary figures).
        expected_champion: The champion the decision was made against.
        moved_since: What the refusal says the champion moved since, with the fix
            (``evaluation; re-run evaluation``).
        data_snapshot_id: The data the decision was made on, if any.
        details: Facts added to the audit entry's details (what the decision compared).
        on_move: Runs inside the lock right after the alias moved (clearing the canary); if it
            raises, the audit entry rolls back.

    Returns:
        The decision as carried out (refused when the champion moved), and the alias check
        made under the lock (``alias_version``: the champion before the move).

    Raises:
        RegistryUnavailableError: MLflow could not say where the alias is (nothing moves).
    """
    with step.audit.exclusive(champion_lock(spec.name)) as section:
        check = check_champion(step.registry, section, spec.name)
        unexplained = record_unexplained(
            section, check, dagster_run_id=step.dagster_run_id, detected_by="promotion"
        )
        champion = check.alias_version
        if decision.promote and champion != expected_champion:
            decision = PromotionDecision(
                False,
                [
                    f"champion moved from {_shown(expected_champion)} to "
                    f"{_shown(champion)} since {moved_since}"
                ],
            )
        action = "promoted" if decision.promote else "not_promoted"
        section.record(
            spec.name,
            action,
            model_version=version,
            data_snapshot_id=data_snapshot_id,
            dagster_run_id=step.dagster_run_id,
            details={
                "reasons": decision.reasons,
                "previous_champion": champion,
                **(details or {}),
                "previous_champion_unexplained": check.unexplained,
            },
        )
        if decision.promote:
            # Inside the section: if the alias does not move, the audit entry rolls back.
            step.registry.set_champion(spec.name, version)
            if on_move is not None:
                on_move()
    if check.unexplained:
        step.log(check.describe())
    alert_recorded(
        check,
        unexplained,
        step.settings,
        step.audit,
        run_id=step.dagster_run_id,
        detected_by="promotion",
    )
    step.registry.tag_version(
        spec.name,
        version,
        {TAG_PROMOTION: action, TAG_PROMOTION_REASON: "; ".join(decision.reasons)},
    )
    for reason in decision.reasons:
        step.log(reason)
    return decision, check


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

    The alias moves under the champion lock, with the ``override_promoted`` entry committed
    with it; that entry is what explains the alias afterwards (``champion_audit``), so the
    override is also how a champion moved outside the platform is accepted.

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
    with audit.exclusive(champion_lock(spec.name)) as section:
        check = check_champion(registry, section, spec.name)
        unexplained = record_unexplained(
            section, check, dagster_run_id=dagster_run_id, detected_by="override"
        )
        previous = check.alias_version
        section.record(
            spec.name,
            "override_promoted",
            model_version=str(version),
            dagster_run_id=dagster_run_id,
            details={
                "reason": reason,
                "requested_by": requested_by,
                "previous_champion": previous,
                "previous_champion_unexplained": check.unexplained,
            },
        )
        # Inside the section: if the alias does not move, the audit entry rolls back.
        registry.set_champion(spec.name, str(version))
    alert_recorded(
        check,
        unexplained,
        PlatformSettings.from_env(audit_url=audit.url),
        audit,
        run_id=dagster_run_id,
        detected_by="override",
    )
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
    return previous
