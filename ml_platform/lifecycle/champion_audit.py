"""Is the ``champion`` alias where the audit log says the platform put it?

Anyone with write access to MLflow can move an alias (the UI does it in two clicks), outside the
gates and the audit log. The platform moves it only with an audit event (``promoted`` by the
gates, ``override_promoted`` by the override job), so the newest such event names the version the
alias should point at: the *explained* champion. An alias elsewhere is *unexplained*: it is
recorded once per model and alias version (audit action ``unexplained_champion``) and alerted;
scoring refuses it (``UnexplainedChampionError``) until the override job or a promotion makes the
alias explained again. Promotion, scoring and the champion sensor all check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ml_platform.core.alerts import Alert, send_alert
from ml_platform.core.audit import AuditLog, AuditSection

if TYPE_CHECKING:
    from ml_platform.core.settings import PlatformSettings

MOVING_ACTIONS = ("promoted", "override_promoted")
"""Audit actions recorded when the platform moves the alias."""
UNEXPLAINED_ACTION = "unexplained_champion"
"""Audit action of an alias that no moving event explains."""


AuditAccess = AuditLog | AuditSection
"""The audit log, or its section inside ``AuditLog.exclusive`` (same reads and writes)."""


class ChampionRegistry(Protocol):
    """The registry call the check makes (``ModelRegistry.champion_version``)."""

    def champion_version(self, model_name: str) -> str | None: ...


def champion_lock(model: str) -> str:
    """The ``AuditLog.exclusive`` lock under which a model's alias is read and moved.

    Args:
        model: The model's name.

    Returns:
        ``champion:<model>``.
    """
    return f"champion:{model}"


@dataclass(frozen=True)
class ChampionCheck:
    """The alias compared with the audit log.

    Attributes:
        model: The model.
        alias_version: The version the ``champion`` alias points at, None when there is none.
        explained_version: The version the newest ``promoted``/``override_promoted`` event
            moved the alias to, None when no such event exists.
    """

    model: str
    alias_version: str | None
    explained_version: str | None

    @property
    def unexplained(self) -> bool:
        """Whether the alias points at a version no audit event put there (no alias is fine)."""
        return self.alias_version is not None and self.alias_version != self.explained_version

    def describe(self) -> str:
        """One sentence: where the alias is, and what the audit log explains."""
        explained = (
            f"v{self.explained_version}"
            if self.explained_version is not None
            else "no version (no promotion or override was ever recorded)"
        )
        return (
            f"the champion alias of '{self.model}' points at v{self.alias_version}, but the audit "
            f"log explains {explained}: the alias was moved outside the platform"
        )


class UnexplainedChampionError(RuntimeError):
    """The ``champion`` alias points at a version the audit log does not explain.

    Attributes:
        check: The alias and the explained version.
    """

    def __init__(self, check: ChampionCheck, override_job: str) -> None:
        self.check = check
        super().__init__(
            f"refusing to score: {check.describe()}. Fix: run the job '{override_job}' with "
            f"version {check.alias_version}, a reason and requested_by to keep it (the override "
            "is audited), or re-promote (materialize the model's champion after an evaluation), "
            "or move the alias back to the explained version"
        )


def explained_champion(audit: AuditAccess, model: str) -> str | None:
    """The version the newest audit event that moved the alias put there.

    Args:
        audit: The audit log (or a section of it holding the champion lock).
        model: The model.

    Returns:
        The version, or None when the platform never moved the alias.
    """
    moves = audit.events(model, actions=MOVING_ACTIONS)
    return moves[-1].model_version if moves else None


def check_champion(registry: ChampionRegistry, audit: AuditAccess, model: str) -> ChampionCheck:
    """Compare the alias with the version the audit log explains.

    Args:
        registry: The MLflow registry holding the alias.
        audit: The audit log (or a section of it holding the champion lock).
        model: The model.

    Returns:
        The check; ``unexplained`` says whether the alias was moved behind the platform's back.

    Raises:
        RegistryUnavailableError: MLflow could not say where the alias is.
    """
    return ChampionCheck(model, registry.champion_version(model), explained_champion(audit, model))


def record_unexplained(
    audit: AuditAccess, check: ChampionCheck, *, dagster_run_id: str | None, detected_by: str
) -> bool:
    """Record an unexplained alias once per model and alias version (since the last move).

    Args:
        audit: The audit log, or a section of it holding the champion lock (then the entry
            commits with the section).
        check: The check; an explained one records nothing.
        dagster_run_id: The Dagster run that detected it, if any.
        detected_by: What detected it (``promotion``, ``override``, ``scoring``, ``sensor``).

    Returns:
        Whether it was recorded now (False: already recorded, or the alias is explained).
    """
    if not check.unexplained:
        return False
    events = audit.events(check.model, actions=(*MOVING_ACTIONS, UNEXPLAINED_ACTION))
    for event in reversed(events):
        if event.action in MOVING_ACTIONS:
            break
        if event.details.get("alias_version") == check.alias_version:
            return False
    audit.record(
        check.model,
        UNEXPLAINED_ACTION,
        model_version=check.alias_version,
        dagster_run_id=dagster_run_id,
        details={
            "alias_version": check.alias_version,
            "explained_version": check.explained_version,
            "detected_by": detected_by,
        },
    )
    return True


def unexplained_alert(check: ChampionCheck, *, run_id: str | None, detected_by: str) -> Alert:
    """The alert for an alias moved outside the platform.

    Args:
        check: An unexplained check.
        run_id: The Dagster run that detected it, if any.
        detected_by: What detected it (``promotion``, ``override``, ``scoring``, ``sensor``).

    Returns:
        The alert; ``details`` holds both versions.
    """
    return Alert(
        title=f"Champion of {check.model} moved outside the platform: v{check.alias_version}",
        model=check.model,
        run_id=run_id,
        job_name=None,
        reasons=[
            check.describe(),
            "scoring refuses this champion until the override job records it or a promotion "
            "replaces it; restrict who may manage the model in MLflow (docs/mlflow_auth.md)",
        ],
        details={
            "kind": UNEXPLAINED_ACTION,
            "alias_version": check.alias_version,
            "explained_version": check.explained_version,
            "detected_by": detected_by,
        },
    )


def audit_champion(
    registry: ChampionRegistry,
    audit: AuditLog,
    settings: PlatformSettings,
    model: str,
    *,
    dagster_run_id: str | None = None,
    detected_by: str,
) -> ChampionCheck:
    """Check the alias under the champion lock; record and alert an unexplained one once.

    Args:
        registry: The MLflow registry holding the alias.
        audit: The audit log.
        settings: The platform settings (the alert channels).
        model: The model.
        dagster_run_id: The Dagster run checking, if any.
        detected_by: What checks (``scoring``, ``sensor``).

    Returns:
        The check.

    Raises:
        RegistryUnavailableError: MLflow could not say where the alias is.
    """
    with audit.exclusive(champion_lock(model)) as section:
        check = check_champion(registry, section, model)
        new = record_unexplained(
            section, check, dagster_run_id=dagster_run_id, detected_by=detected_by
        )
    alert_recorded(check, new, settings, audit, run_id=dagster_run_id, detected_by=detected_by)
    return check


def alert_recorded(
    check: ChampionCheck,
    recorded: bool,
    settings: PlatformSettings,
    audit: AuditLog,
    *,
    run_id: str | None,
    detected_by: str,
) -> None:
    """Alert an unexplained champion that ``record_unexplained`` just recorded (else nothing).

    Call it after the champion lock's section: the alert's own audit entry would wait for the
    section's lock.

    Args:
        check: The check.
        recorded: What ``record_unexplained`` returned.
        settings: The platform settings (the alert channels).
        audit: The audit log the alert is recorded in.
        run_id: The Dagster run checking, if any.
        detected_by: What checked (``promotion``, ``scoring``, ``sensor``).
    """
    if recorded:
        alert = unexplained_alert(check, run_id=run_id, detected_by=detected_by)
        send_alert(alert, settings, audit)


def raise_if_unexplained(check: ChampionCheck) -> None:
    """Refuse an unexplained champion (what scoring calls after ``audit_champion``).

    Args:
        check: The check.

    Raises:
        UnexplainedChampionError: The alias is unexplained.
    """
    if check.unexplained:
        raise UnexplainedChampionError(check, f"{check.model}_promote_override")
