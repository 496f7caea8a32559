"""Canary figures and decision: the canary judged on its live calls beside the champion.

``canary_figures`` measures the running canary (``lifecycle.deploy.running_canary``) from the
call trail (``prediction_calls``) since it started, beside the champion's calls over the same
time: calls, 5xx error rate, p50/p99 latency, the Jensen-Shannon distance between their score
distributions, and the primary metric on calls whose labels arrived. ``decide_canary`` turns the
figures into promote, roll back or wait, by the spec's ``serving.canary`` bounds, with one
readable reason per bound (measured against bound). ``call_counts`` is the one aggregate query
the canary sensor runs; it never imports MLflow.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ml_platform.lifecycle.deploy import CanaryRun, running_canary, utc_moment
from ml_platform.lifecycle.live_figures import (
    CANARY,
    CHAMPION,
    CanaryDecision,
    CanaryFigures,
    RoleFigures,
)
from ml_platform.spec.values import parse_duration

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd

    from ml_platform.lifecycle.records import StepContext
    from ml_platform.spec.catalog import Catalog
    from ml_platform.spec.model import CanarySpec, ModelSpec

MAX_MEASURED_CALLS = 100_000
"""Latency, scores and labels are measured on at most this many newest calls per role."""


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
        .where(_role_condition(model, run, utc_moment(until)))
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

    until = utc_moment(now)
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


def _compared(
    what: str,
    measured: float | None,
    bound: float,
    describe: Callable[[float], str],
    champion_calls: int,
    needed: int,
) -> tuple[bool | None, str]:
    """A bound judged beside the champion: unmeasured until it answered ``needed`` calls."""
    if measured is None or champion_calls < needed:
        return None, f"{what} not compared: {champion_calls} champion calls, {needed} needed"
    return _bound(measured, bound, describe(measured))


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
    checks.append(
        _compared(
            "latency",
            figures.latency_ratio,
            policy.max_latency_ratio,
            lambda ratio: (
                f"p99 latency ratio {ratio:.2f} {{op}} bound {policy.max_latency_ratio:.2f} "
                f"(canary {canary.p99_latency_ms:.1f} ms, champion "
                f"{champion.p99_latency_ms:.1f} ms)"
            ),
            champion.calls,
            needed,
        )
    )
    checks.append(
        _compared(
            "prediction shift",
            figures.prediction_shift,
            policy.max_prediction_shift,
            lambda shift: (
                f"prediction shift (Jensen-Shannon distance of the scores) {shift:.3f} {{op}} "
                f"bound {policy.max_prediction_shift:.3f}"
            ),
            champion.calls,
            needed,
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
    moment = utc_moment(now) if now is not None else datetime.fromisoformat(figures.measured_at)
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
