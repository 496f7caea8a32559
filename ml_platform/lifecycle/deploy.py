"""Deploy: what the prediction service serves, and a canary judged on its live calls.

The service serves the ``champion`` alias and, while a canary runs, the ``canary`` alias to a
share of the entities (``ModelRegistry.serving_state``). ``start_canary`` points the canary at
the newest version whose evaluation gates passed (or the one asked for); ``canary_figures``
measures it from the call trail (``prediction_calls``) since it started, beside the champion's
calls over the same time: calls, 5xx error rate, p50/p99 latency, the Jensen-Shannon distance
between their score distributions, and the primary metric on calls whose labels arrived.
``decide_canary`` turns the figures into promote, roll back or wait, by the spec's
``serving.canary`` bounds, with one readable reason per bound (measured against bound).
``promote_canary`` moves the champion through the platform's one promotion path
(``lifecycle.promote.move_champion``: compare-and-set under the champion lock, audited
``promoted`` with ``via: canary``); ``rollback_canary`` removes the canary (``canary_rolled_back``).

Every change of the canary is recorded in the audit log under the champion lock, so the audit log
alone says whether a canary runs (``running_canary``): the canary sensor reads it there, with one
aggregate query over the call trail (``call_counts``), and never imports MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from ml_platform.core.helpers import JsonDataclass
from ml_platform.core.tasks import higher_is_better
from ml_platform.evaluation.promotion import PromotionDecision
from ml_platform.lifecycle.champion_audit import AuditAccess, champion_lock
from ml_platform.lifecycle.records import TAG_EVALUATION
from ml_platform.spec.values import parse_duration

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml_platform.lifecycle.records import StepContext
    from ml_platform.registry.client import ServingState
    from ml_platform.spec.catalog import Catalog
    from ml_platform.spec.model import CanarySpec, ModelSpec

CANARY_STARTED = "canary_started"
"""Audit action: a version started serving a share of the traffic as canary."""
CANARY_ROLLED_BACK = "canary_rolled_back"
"""Audit action: the canary was removed without being promoted, with the reasons."""
PROMOTED = "promoted"
"""Audit action of every champion move by the gates or by a canary (``details.via``)."""
VIA_CANARY = "canary"
"""``details.via`` of a ``promoted`` entry that promoted a canary."""
CANARY = "canary"
CHAMPION = "champion"
EVALUATION_PASSED = "passed"
MAX_MEASURED_CALLS = 100_000
"""Latency, scores and labels are measured on at most this many newest calls per role."""

CanaryAction = Literal["promote", "rollback", "wait"]


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


@dataclass(frozen=True)
class RoleFigures(JsonDataclass):
    """One role's live calls since the canary started.

    Attributes:
        role: ``canary`` or ``champion``.
        version: The version answering in that role.
        calls: Calls it answered (any status).
        errors: Those answered with a 5xx status.
        p50_latency_ms: Median latency, None without calls.
        p99_latency_ms: 99th percentile latency, None without calls.
        labelled_calls: Successful calls whose label has arrived.
        metric_value: The primary metric on the labelled calls, None when not computable.
    """

    role: str
    version: str | None
    calls: int = 0
    errors: int = 0
    p50_latency_ms: float | None = None
    p99_latency_ms: float | None = None
    labelled_calls: int = 0
    metric_value: float | None = None

    @property
    def error_rate(self) -> float | None:
        """The share of calls answered with a 5xx status; None without calls."""
        return self.errors / self.calls if self.calls else None


@dataclass(frozen=True)
class CanaryFigures(JsonDataclass):
    """The canary's live figures beside the champion's, over the same time.

    Attributes:
        model: The model.
        canary: The canary's calls.
        champion: The champion's calls.
        share: The canary's traffic share.
        since: When the canary started (ISO 8601, UTC).
        measured_at: The end of the measured time (ISO 8601, UTC).
        metric: The primary metric.
        prediction_shift: Jensen-Shannon distance (natural log, as Evidently's drift test)
            between the canary's and the champion's score distributions; None without scores.
        notes: What could not be measured, and why.
    """

    model: str
    canary: RoleFigures
    champion: RoleFigures
    share: float
    since: str
    measured_at: str
    metric: str
    prediction_shift: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def running_for(self) -> timedelta:
        """How long the canary had run when measured."""
        return datetime.fromisoformat(self.measured_at) - datetime.fromisoformat(self.since)

    @property
    def latency_ratio(self) -> float | None:
        """The canary's p99 latency over the champion's; None when either is unknown."""
        canary, champion = self.canary.p99_latency_ms, self.champion.p99_latency_ms
        if canary is None or champion is None:
            return None
        return canary / champion if champion > 0 else math.inf

    @property
    def performance_drop(self) -> float | None:
        """How much worse the canary's metric is than the champion's (positive = worse)."""
        canary, champion = self.canary.metric_value, self.champion.metric_value
        if canary is None or champion is None:
            return None
        return champion - canary if higher_is_better(self.metric) else canary - champion

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryFigures:
        """Read what ``to_dict`` wrote."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for role in (CANARY, CHAMPION):
            values[role] = RoleFigures.from_dict(values[role])
        return cls(**values)

    def table(self) -> list[dict[str, Any]]:
        """One row per role: version, calls, error rate, latency, labelled calls, metric."""
        return [
            {
                "role": figures.role,
                "version": figures.version,
                "calls": figures.calls,
                "error_rate": _rounded(figures.error_rate, 4),
                "p50_latency_ms": _rounded(figures.p50_latency_ms, 2),
                "p99_latency_ms": _rounded(figures.p99_latency_ms, 2),
                "labelled_calls": figures.labelled_calls,
                self.metric: _rounded(figures.metric_value, 4),
            }
            for figures in (self.canary, self.champion)
        ]


@dataclass(frozen=True)
class CanaryDecision(JsonDataclass):
    """What to do with the canary, and why (one sentence per bound: measured against bound).

    Attributes:
        action: ``promote``, ``rollback`` or ``wait``.
        reasons: Why; the broken bounds first on a rollback.
    """

    action: CanaryAction
    reasons: list[str]


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _shown(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


def _now(now: datetime | None) -> datetime:
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
    since = _now(now)
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


def call_counts(
    audit_url: str, model: str, run: CanaryRun, until: datetime | None = None
) -> dict[str, tuple[int, int]]:
    """Calls and 5xx errors per role since the canary started: one aggregate query.

    Args:
        audit_url: The audit database holding the call trail.
        model: The model.
        run: The running canary (its version, champion and start).
        until: The end of the counted time (default: now).

    Returns:
        ``{"canary": (calls, errors), "champion": (calls, errors)}``.
    """
    import sqlalchemy as sa

    from ml_platform.serving.calls import PREDICTION_CALLS as calls
    from ml_platform.serving.calls import calls_engine

    query = (
        sa.select(
            calls.c.role,
            sa.func.count(),
            sa.func.sum(sa.case((calls.c.status_code >= 500, 1), else_=0)),
        )
        .where(_role_condition(model, run, _now(until)))
        .group_by(calls.c.role)
    )
    with calls_engine(audit_url).connect() as connection:
        rows = connection.execute(query).all()
    counts = {CANARY: (0, 0), CHAMPION: (0, 0)}
    for role, total, errors in rows:
        counts[str(role)] = (int(total), int(errors or 0))
    return counts


def _role_condition(model: str, run: CanaryRun, until: datetime) -> Any:
    """Calls of the canary version as canary and of the start's champion as champion."""
    import sqlalchemy as sa

    from ml_platform.serving.calls import PREDICTION_CALLS as calls

    roles = [sa.and_(calls.c.role == CANARY, calls.c.model_version == run.version)]
    if run.champion is not None:
        roles.append(sa.and_(calls.c.role == CHAMPION, calls.c.model_version == run.champion))
    return sa.and_(
        calls.c.model == model,
        calls.c.called_at >= run.started_at,
        calls.c.called_at < until,
        sa.or_(*roles),
    )


def _read_calls(audit_url: str, model: str, run: CanaryRun, until: datetime) -> pd.DataFrame:
    """The newest ``MAX_MEASURED_CALLS`` calls per role: status, latency, prediction, ids."""
    import pandas as pd
    import sqlalchemy as sa

    from ml_platform.serving.calls import PREDICTION_CALLS as calls
    from ml_platform.serving.calls import calls_engine

    columns = [
        calls.c.role,
        calls.c.status_code,
        calls.c.latency_ms,
        calls.c.prediction,
        calls.c.identifiers,
    ]
    frames = []
    with calls_engine(audit_url).connect() as connection:
        for role in (CANARY, CHAMPION):
            query = (
                sa.select(*columns)
                .where(_role_condition(model, run, until), calls.c.role == role)
                .order_by(calls.c.called_at.desc())
                .limit(MAX_MEASURED_CALLS)
            )
            rows = connection.execute(query).mappings().all()
            names = pd.Index([c.name for c in columns])
            frames.append(pd.DataFrame([dict(row) for row in rows], columns=names))
    return pd.concat(frames, ignore_index=True)


def _score(prediction: Any) -> float:
    """A call's score for the distribution: the value, or the predicted class of a list."""
    if isinstance(prediction, list):
        return float(max(range(len(prediction)), key=lambda i: prediction[i]))
    return float(prediction)


def prediction_shift(canary: np.ndarray, champion: np.ndarray, categorical: bool) -> float | None:
    """Jensen-Shannon distance between two score samples, binned together.

    Numeric scores share Sturges bins over both samples' range (Evidently's binning); classes
    are compared by their shares.

    Args:
        canary: The canary's scores (or predicted classes).
        champion: The champion's.
        categorical: Whether the values are classes.

    Returns:
        The distance (``monitoring.statistical_tests.jensen_shannon``), None if a side is empty.
    """
    import numpy as np

    from ml_platform.monitoring.statistical_tests import jensen_shannon

    if len(canary) == 0 or len(champion) == 0:
        return None
    both = np.concatenate([canary, champion])
    if categorical:
        edges = np.append(np.unique(both), np.inf)
    else:
        edges = np.histogram_bin_edges(both, bins="sturges")
    canary_counts = np.histogram(canary, edges)[0]
    champion_counts = np.histogram(champion, edges)[0]
    return jensen_shannon(canary_counts / len(canary), champion_counts / len(champion))


def _label_rows(
    spec: ModelSpec, catalog: Catalog, step: StepContext, names: set[str], now: datetime
) -> tuple[pd.DataFrame | None, list[str], str | None]:
    """The label source's known labels keyed by the identifier columns the calls carry."""
    import pandas as pd

    _, source = catalog.sources()[spec.label.source]
    label, available = spec.label.column, spec.label.available_at_column
    keys = sorted(n for n in names if n in source.columns and n not in (label, available))
    if not keys:
        return (
            None,
            [],
            f"no call carries an identifier of the label source '{source.name}' (calls' ids: "
            f"{', '.join(sorted(names)) or 'none'}; its columns: {', '.join(source.columns)}): "
            "send one in the request's ids (e.g. the row's id) to judge performance",
        )
    wanted = [*keys, label, *([available] if available else [])]
    labels = pd.read_parquet(step.settings.data_path(source.path), columns=wanted)
    known = labels[label].notna()
    if available:
        known &= pd.to_datetime(labels[available], utc=True, errors="coerce") <= now
    labels = labels.loc[known, [*keys, label]]
    for key in keys:
        labels[key] = labels[key].map(_identifier)
    return labels.drop_duplicates(keys, keep="last"), keys, None


def _identifier(value: Any) -> str:
    """An identifier as text, so that 7, 7.0 and "7" from JSON and parquet join."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _metric_on(spec: ModelSpec, rows: pd.DataFrame, classes: list[Any] | None) -> float | None:
    """The primary metric on labelled calls (label column + prediction), None if undefined."""
    import numpy as np

    from ml_platform.evaluation.metrics import compute_metrics

    if rows.empty:
        return None
    label = spec.label.column
    if spec.task == "multiclass_classification":
        assert classes is not None
        index = {c: i for i, c in enumerate(classes)}
        truth = np.asarray([index[value] for value in rows[label]])
        prediction = np.asarray(rows["prediction"].tolist(), dtype=float)
        if prediction.ndim != 2 or prediction.shape[1] != len(classes):
            return None
    else:
        truth = rows[label].to_numpy()
        prediction = rows["prediction"].astype(float).to_numpy()
    value = compute_metrics(spec.task, truth, prediction, spec.evaluation.threshold).get(
        spec.primary_metric
    )
    return None if value is None or not math.isfinite(value) else float(value)


def measure_canary(
    spec: ModelSpec,
    step: StepContext,
    run: CanaryRun,
    *,
    catalog: Catalog | None = None,
    now: datetime | None = None,
) -> CanaryFigures:
    """The canary's and the champion's live figures since the canary started.

    Args:
        spec: The model spec (task, label, primary metric).
        step: The engines (the audit database holding the call trail; the data root).
        run: The running canary.
        catalog: The loaded specs, for the label source; None leaves performance unjudged.
        now: The end of the measured time (default: now).

    Returns:
        The figures; ``notes`` says what could not be measured.
    """
    import numpy as np
    import pandas as pd

    until = _now(now)
    frame = _read_calls(step.audit.url, spec.name, run, until)
    counts = call_counts(step.audit.url, spec.name, run, until)
    notes: list[str] = []
    ok = frame[(frame["status_code"] < 300) & frame["prediction"].notna()]
    labelled: dict[str, pd.DataFrame] = {}
    classes: list[Any] | None = None
    if catalog is None:
        notes.append(f"{spec.primary_metric} not measured: no label source given")
    elif not ok.empty:
        ids = pd.Series([found or {} for found in ok["identifiers"]], index=ok.index)
        names = {name for found in ids for name in found}
        try:
            labels, keys, why = _label_rows(spec, catalog, step, names, until)
        except (OSError, KeyError, ValueError) as error:
            # Unreadable labels cost the performance figure, never the other bounds.
            why = f"label source unreadable ({type(error).__name__}: {error})"
            labels, keys = None, []
        if labels is None:
            notes.append(f"{spec.primary_metric} not measured: {why}")
        else:
            calls = ok.assign(
                **{k: ids.map(lambda found, k=k: _identifier(found.get(k))) for k in keys}
            )
            joined = calls.merge(labels, on=keys, how="inner")
            classes = sorted(labels[spec.label.column].unique().tolist())
            labelled = {role: joined.loc[joined["role"] == role] for role in (CANARY, CHAMPION)}

    def role_figures(role: str, version: str | None) -> RoleFigures:
        calls, errors = counts.get(role, (0, 0))
        latency = frame.loc[frame["role"] == role, "latency_ms"].to_numpy(dtype=float)
        p50, p99 = np.percentile(latency, [50, 99]) if len(latency) else (None, None)
        rows = labelled.get(role)
        return RoleFigures(
            role=role,
            version=version,
            calls=calls,
            errors=errors,
            p50_latency_ms=None if p50 is None else float(p50),
            p99_latency_ms=None if p99 is None else float(p99),
            labelled_calls=0 if rows is None else len(rows),
            metric_value=None if rows is None else _metric_on(spec, rows, classes),
        )

    categorical = spec.task == "multiclass_classification"
    scores = {
        role: ok.loc[ok["role"] == role, "prediction"].map(_score).to_numpy(dtype=float)
        for role in (CANARY, CHAMPION)
    }
    return CanaryFigures(
        model=spec.name,
        canary=role_figures(CANARY, run.version),
        champion=role_figures(CHAMPION, run.champion),
        share=run.share,
        since=run.started_at.isoformat(),
        measured_at=until.isoformat(),
        metric=spec.primary_metric,
        prediction_shift=prediction_shift(scores[CANARY], scores[CHAMPION], categorical),
        notes=notes,
    )


def canary_figures(
    spec: ModelSpec,
    step: StepContext,
    *,
    catalog: Catalog | None = None,
    now: datetime | None = None,
) -> CanaryFigures | None:
    """The running canary's live figures (see ``measure_canary``), None when none runs.

    Args:
        spec: The model spec.
        step: The engines and run of this step.
        catalog: The loaded specs, for the label source; None leaves performance unjudged.
        now: The end of the measured time (default: now).

    Returns:
        The figures, or None when the audit log records no running canary.
    """
    run = running_canary(step.audit, spec.name)
    if run is None:
        return None
    return measure_canary(spec, step, run, catalog=catalog, now=now)


def _bound(measured: float, bound: float, text: str) -> tuple[bool, str]:
    """Whether ``measured`` is within ``bound``, and the sentence saying so."""
    ok = measured <= bound
    return ok, text.format(op="<=" if ok else ">")


def bound_checks(policy: CanarySpec, figures: CanaryFigures) -> list[tuple[bool | None, str]]:
    """Each bound of ``serving.canary`` against the figures: within (True), broken, unmeasured.

    Args:
        policy: The spec's canary bounds.
        figures: The measured figures.

    Returns:
        ``(verdict, sentence)`` per bound; ``None`` when it cannot be judged yet.
    """
    canary, champion = figures.canary, figures.champion
    needed = policy.min_calls
    checks: list[tuple[bool | None, str]] = []
    rate = canary.error_rate
    if rate is None:
        checks.append((None, "error rate not measured: the canary answered no call yet"))
    else:
        checks.append(
            _bound(
                rate,
                policy.max_error_rate,
                f"error rate {rate:.2%} {{op}} bound {policy.max_error_rate:.2%} "
                f"({canary.errors} of {canary.calls} canary calls answered 5xx)",
            )
        )
    ratio = figures.latency_ratio
    if ratio is None or champion.calls < needed:
        checks.append(
            (
                None,
                f"latency not compared: {champion.calls} champion calls, {needed} needed",
            )
        )
    else:
        checks.append(
            _bound(
                ratio,
                policy.max_latency_ratio,
                f"p99 latency ratio {ratio:.2f} {{op}} bound {policy.max_latency_ratio:.2f} "
                f"(canary {canary.p99_latency_ms:.1f} ms, champion "
                f"{champion.p99_latency_ms:.1f} ms)",
            )
        )
    shift = figures.prediction_shift
    if shift is None or champion.calls < needed:
        checks.append(
            (
                None,
                f"prediction shift not compared: {champion.calls} champion calls, {needed} needed",
            )
        )
    else:
        checks.append(
            _bound(
                shift,
                policy.max_prediction_shift,
                f"prediction shift (Jensen-Shannon distance of the scores) {shift:.3f} {{op}} "
                f"bound {policy.max_prediction_shift:.3f}",
            )
        )
    drop, metric = figures.performance_drop, figures.metric
    if drop is None or min(canary.labelled_calls, champion.labelled_calls) < needed:
        checks.append(
            (
                None,
                f"{metric} not judged yet: {canary.labelled_calls} canary and "
                f"{champion.labelled_calls} champion calls labelled, {needed} of each needed",
            )
        )
    else:
        checks.append(
            _bound(
                drop,
                policy.max_performance_drop,
                f"{metric} drop {drop:+.4f} {{op}} bound {policy.max_performance_drop:.4f} "
                f"(canary {canary.metric_value:.4f} on {canary.labelled_calls} labelled calls, "
                f"champion {champion.metric_value:.4f} on {champion.labelled_calls})",
            )
        )
    return checks


def decide_canary(
    spec: ModelSpec, figures: CanaryFigures, now: datetime | None = None
) -> CanaryDecision:
    """Promote, roll back or wait, by the spec's ``serving.canary`` bounds.

    With at least ``min_calls`` canary calls, a broken bound rolls the canary back; with every
    measurable bound kept, latency and prediction shift compared on at least ``min_calls``
    champion calls too, and ``min_duration`` passed, it is promoted (the performance bound
    counts once ``min_calls`` calls of each role are labelled). A canary still undecided after
    ``max_duration`` is rolled back. Anything else waits.

    Args:
        spec: The model spec (``serving.canary``).
        figures: The canary's live figures.
        now: The time of the decision (default: the figures' ``measured_at``).

    Returns:
        The action and its reasons, each stating the measured value and the bound.
    """
    from ml_platform.training.progress import format_duration

    policy = spec.serving.canary
    moment = _now(now) if now is not None else datetime.fromisoformat(figures.measured_at)
    running = moment - datetime.fromisoformat(figures.since)
    min_duration, max_duration = (
        parse_duration(policy.min_duration),
        parse_duration(policy.max_duration),
    )
    checks = bound_checks(policy, figures)
    broken = [text for verdict, text in checks if verdict is False]
    kept = [text for verdict, text in checks if verdict is True]
    unmeasured = [text for verdict, text in checks if verdict is None]
    calls = figures.canary.calls
    enough = calls >= policy.min_calls
    volume = f"{calls} canary calls {'>=' if enough else '<'} min_calls {policy.min_calls}"
    ran = format_duration(running.total_seconds())
    timing = (
        f"running {ran} {'>=' if running >= min_duration else '<'} min_duration "
        f"{policy.min_duration}"
    )
    if enough and broken:
        return CanaryDecision("rollback", [*broken, volume, *kept, *unmeasured])
    comparable = figures.champion.calls >= policy.min_calls
    if enough and comparable and running >= min_duration:
        return CanaryDecision("promote", [volume, timing, *kept, *unmeasured])
    if running >= max_duration:
        return CanaryDecision(
            "rollback",
            [
                f"undecided after {ran} >= max_duration {policy.max_duration}",
                volume,
                *kept,
                *unmeasured,
            ],
        )
    return CanaryDecision("wait", [volume, timing, *kept, *unmeasured])


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
