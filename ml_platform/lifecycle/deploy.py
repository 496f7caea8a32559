"""Deploy: what the prediction service serves, and starting, promoting or rolling back a canary.

The service serves the ``champion`` alias and, while a canary runs, the ``canary`` alias to a
share of the entities (``ModelRegistry.serving_state``). ``start_canary`` points the canary at
the newest version whose evaluation gates passed (or the one asked for); its live figures and the
decision to promote, roll back or wait are in ``lifecycle.canary``.
``promote_canary`` moves the champion through the platform's one promotion path
(``lifecycle.promote.move_champion``: compare-and-set under the champion lock, audited
``promoted`` with ``via: canary``); ``rollback_canary`` removes the canary (``canary_rolled_back``).

Every change of the canary is recorded in the audit log under the champion lock, so the audit log
alone says whether a canary runs (``running_canary``): the canary sensor reads it there, with one
aggregate query over the call trail (``lifecycle.canary.call_counts``), and never imports MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ml_platform.core.helpers import JsonDataclass
from ml_platform.evaluation.promotion import PromotionDecision
from ml_platform.lifecycle.champion_audit import AuditAccess, champion_lock
from ml_platform.lifecycle.records import TAG_EVALUATION

if TYPE_CHECKING:
    from ml_platform.lifecycle.live_figures import CanaryDecision, CanaryFigures
    from ml_platform.lifecycle.records import StepContext
    from ml_platform.registry.serving import ServingState
    from ml_platform.spec.model import ModelSpec

CANARY_STARTED = "canary_started"
"""Audit action: a version started serving a share of the traffic as canary."""
CANARY_ROLLED_BACK = "canary_rolled_back"
"""Audit action: the canary was removed without being promoted, with the reasons."""
PROMOTED = "promoted"
"""Audit action of every champion move by the gates or by a canary (``details.via``)."""
VIA_CANARY = "canary"
"""``details.via`` of a ``promoted`` entry that promoted a canary."""
EVALUATION_PASSED = "passed"


class CanaryError(ValueError):
    """A canary cannot start or change as asked; the message says why and the fix."""


@dataclass(frozen=True)
class CanaryRun(JsonDataclass):
    """A running canary as its ``canary_started`` audit entry recorded it.

    Attributes:
        version: The canary version.
        champion: The champion when it started (what it is compared with and would replace).
        share: Its share of the traffic.
        since: When it started (ISO 8601, UTC).
        reason: Why this version (picked as the newest gated one, or asked for).
    """

    version: str
    champion: str | None
    share: float
    since: str
    reason: str = ""

    @property
    def started_at(self) -> datetime:
        """``since`` as an aware UTC datetime."""
        moment = datetime.fromisoformat(self.since)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class DeploymentState(JsonDataclass):
    """What is live for a model: the champion and, when one runs, the canary with its share.

    Attributes:
        model: The model.
        champion: The champion version, or None.
        canary: The canary version, or None.
        canary_share: The canary's share of the traffic (0 without a canary).
        canary_since: When the canary started (ISO 8601, UTC), or None.
        champion_share: The champion's share of the traffic.
    """

    model: str
    champion: str | None
    canary: str | None = None
    canary_share: float = 0.0
    canary_since: str | None = None
    champion_share: float = 1.0

    @classmethod
    def of(cls, model: str, state: ServingState) -> DeploymentState:
        """The deployment state of ``model`` from the registry's serving state."""
        since = state.canary_since.isoformat() if state.canary_since is not None else None
        share = state.canary_share if state.canary is not None else 0.0
        return cls(
            model=model,
            champion=state.champion,
            canary=state.canary,
            canary_share=share,
            canary_since=since,
            champion_share=(1.0 - share) if state.champion is not None else 0.0,
        )


def _shown(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


def utc_moment(now: datetime | None) -> datetime:
    """``now`` as an aware UTC datetime; the current time when None."""
    moment = now or datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def running_canary(audit: AuditAccess, model: str) -> CanaryRun | None:
    """The canary the audit log says runs: its newest start, unless it ended since.

    A canary ends with ``canary_rolled_back`` or a ``promoted`` entry ``via: canary``.

    Args:
        audit: The audit log (or a section of it holding the champion lock).
        model: The model.

    Returns:
        The running canary, or None.
    """
    events = audit.events(model, actions=(CANARY_STARTED, CANARY_ROLLED_BACK, PROMOTED))
    for event in reversed(events):
        if event.action == CANARY_STARTED:
            return CanaryRun.from_dict(event.details)
        if event.action == CANARY_ROLLED_BACK or event.details.get("via") == VIA_CANARY:
            return None
    return None


def deployment_state(spec: ModelSpec, step: StepContext) -> DeploymentState:
    """What the prediction service serves now, as the registry says (one MLflow call).

    Args:
        spec: The model spec.
        step: The engines and run of this step.

    Returns:
        The champion, the canary, its share and since when.
    """
    return DeploymentState.of(spec.name, step.registry.serving_state(spec.name))


def gated_versions(spec: ModelSpec, step: StepContext) -> list[str]:
    """The versions whose evaluation gates passed (``ml_platform.evaluation`` = ``passed``).

    Args:
        spec: The model spec.
        step: The engines and run of this step.

    Returns:
        Version numbers, oldest first.
    """
    return step.registry.tagged_versions(spec.name, {TAG_EVALUATION: EVALUATION_PASSED})


def _canary_version(spec: ModelSpec, step: StepContext, champion: str, version: str | None):
    """The version to canary and why; CanaryError when it is not a servable challenger."""
    gated = gated_versions(spec, step)
    if version is None:
        candidates = [v for v in gated if v != champion]
        if not candidates:
            raise CanaryError(
                f"model '{spec.name}' has no version whose evaluation gates passed besides the "
                f"champion v{champion} (gated versions: {', '.join(gated) or 'none'}); train "
                f"one (the job '{spec.name}_training') and start the canary once it is evaluated"
            )
        version = candidates[-1]
        return version, f"newest version whose evaluation gates passed; champion v{champion}"
    version = str(version)
    if version == champion:
        raise CanaryError(
            f"v{version} is already the champion of '{spec.name}'; a canary must be another "
            "version: leave the version empty for the newest one whose gates passed"
        )
    if version not in gated:
        known = step.registry.registered_versions(spec.name)
        what = "is not registered" if version not in known else "did not pass its evaluation gates"
        raise CanaryError(
            f"v{version} of '{spec.name}' {what}: only a version whose evaluation gates passed "
            f"may serve (gated versions: {', '.join(gated) or 'none'}); pick one of them, or "
            "evaluate the version first"
        )
    return version, f"requested version; champion v{champion}"


def start_canary(
    spec: ModelSpec,
    step: StepContext,
    *,
    version: str | None = None,
    share: float | None = None,
    now: datetime | None = None,
) -> DeploymentState:
    """Serve a gated version to a share of the traffic beside the champion, audited.

    Under the champion lock: the registry must have a champion and no running canary; the
    ``canary_started`` entry (version, share, since, champion, reason) is written, then the
    ``canary`` alias and its share and start tags are set, then both commit.

    Args:
        spec: The model spec (``serving.canary.traffic_share`` is the default share).
        step: The engines and run of this step.
        version: The version to canary; None picks the newest version whose evaluation gates
            passed that is not the champion.
        share: The canary's traffic share in (0, 1); None takes the spec's.
        now: The start time (default: now).

    Returns:
        The deployment state with the canary.

    Raises:
        CanaryError: No champion, a canary already runs, no such gated version, or the share
            is outside (0, 1).
    """
    share = spec.serving.canary.traffic_share if share is None else float(share)
    if not 0.0 < share < 1.0:
        raise CanaryError(
            f"canary traffic share of '{spec.name}' must be between 0 and 1 (exclusive), got "
            f"{share}; pass e.g. 0.2 for 20% of the entities"
        )
    since = utc_moment(now)
    with step.audit.exclusive(champion_lock(spec.name)) as section:
        state = step.registry.serving_state(spec.name)
        if state.champion is None:
            raise CanaryError(
                f"model '{spec.name}' has no champion to compare a canary with; promote a "
                f"version first (the job '{spec.name}_training')"
            )
        if state.canary is not None:
            started = state.canary_since.isoformat() if state.canary_since else "unknown"
            raise CanaryError(
                f"a canary of '{spec.name}' already runs: v{state.canary} at "
                f"{state.canary_share:.0%} since {started}; let the canary sensor decide, or "
                f"roll it back first (materialize '{spec.name}/deployment' with action rollback)"
            )
        chosen, reason = _canary_version(spec, step, state.champion, version)
        run = CanaryRun(chosen, state.champion, share, since.isoformat(), reason)
        section.record(
            spec.name,
            CANARY_STARTED,
            model_version=chosen,
            dagster_run_id=step.dagster_run_id,
            details=run.to_dict(),
        )
        # Inside the section: if MLflow fails, the audit entry rolls back.
        step.registry.set_canary(spec.name, chosen, share, since)
    step.log(f"canary v{chosen} of {spec.name} serves {share:.0%} of the entities ({reason})")
    return deployment_state(spec, step)


def promote_canary(
    spec: ModelSpec,
    step: StepContext,
    figures: CanaryFigures,
    decision: CanaryDecision,
) -> tuple[PromotionDecision, DeploymentState]:
    """Make the canary the champion through the promotion path of the gates, and end it.

    ``lifecycle.promote.move_champion`` moves the alias by compare-and-set under the champion
    lock with a ``promoted`` entry (``via: canary``, the figures, the reasons, the previous
    champion) and clears the canary in the same section. If the champion moved since the canary
    started, nothing is promoted (``not_promoted``) and the canary is rolled back, saying so.

    Args:
        spec: The model spec.
        step: The engines and run of this step.
        figures: The figures the decision was made on.
        decision: The ``promote`` decision and its reasons.

    Returns:
        The promotion as carried out, and the deployment state after it.

    Raises:
        CanaryError: No canary runs.
    """
    from ml_platform.lifecycle.promote import move_champion

    run = running_canary(step.audit, spec.name)
    if run is None:
        raise CanaryError(f"no canary of '{spec.name}' runs: nothing to promote")
    outcome, _ = move_champion(
        spec,
        step,
        run.version,
        PromotionDecision(True, list(decision.reasons)),
        expected_champion=run.champion,
        moved_since=(
            f"the canary v{run.version} started at {run.since} (its figures compare it with "
            f"{_shown(run.champion)}); start a new canary"
        ),
        details={"via": VIA_CANARY, "figures": figures.to_dict(), "canary_since": run.since},
        on_move=lambda: step.registry.clear_canary(spec.name),
    )
    if not outcome.promote:
        rollback_canary(spec, step, outcome.reasons, figures=figures)
    return outcome, deployment_state(spec, step)


def rollback_canary(
    spec: ModelSpec,
    step: StepContext,
    reasons: list[str],
    *,
    figures: CanaryFigures | None = None,
) -> DeploymentState:
    """Stop serving the canary: a ``canary_rolled_back`` entry with the reasons, alias cleared.

    Under the champion lock. A canary the registry serves without a ``canary_started`` entry
    (set outside the platform) is rolled back too; an entry whose alias was removed outside the
    platform is closed, saying so.

    Args:
        spec: The model spec.
        step: The engines and run of this step.
        reasons: Why (the decision's reasons, or who rolled it back by hand).
        figures: The figures the decision was made on, if any.

    Returns:
        The deployment state after it (unchanged when no canary ran).
    """
    with step.audit.exclusive(champion_lock(spec.name)) as section:
        run = running_canary(section, spec.name)
        state = step.registry.serving_state(spec.name)
        version = state.canary or (run.version if run is not None else None)
        if version is not None:
            if state.canary is None:
                reasons = [*reasons, "the canary alias was already removed outside the platform"]
            section.record(
                spec.name,
                CANARY_ROLLED_BACK,
                model_version=version,
                dagster_run_id=step.dagster_run_id,
                details={
                    "reasons": reasons,
                    "champion": state.champion,
                    "share": state.canary_share if state.canary else (run and run.share),
                    "since": run.since if run is not None else None,
                    "figures": figures.to_dict() if figures is not None else None,
                },
            )
            # Inside the section: if MLflow fails, the audit entry rolls back.
            step.registry.clear_canary(spec.name)
    if version is not None:
        step.log(f"canary v{version} of {spec.name} rolled back: {'; '.join(reasons)}")
    return deployment_state(spec, step)
