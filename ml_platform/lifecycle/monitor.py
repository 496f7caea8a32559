"""Monitor: judge a scored window against the champion's training reference, report, alert.

``monitor_drift`` reads the newest predictions (or a window given by time range or file; or, with
``monitoring.source: calls``, the prediction service's calls: see ``lifecycle.scored_window``), the
champion version's reference stored at training time (``lifecycle.reference``: never recomputed
from training data), and judges every model input and the model's output with
``ml_platform.monitoring.drift.detect_drift``. Where labels of scored rows have arrived (the
label source's ``available_at_column`` is past), the primary metric on those rows is compared
with the champion's evaluation. Evidently's HTML report is rendered on bounded samples. The report
(JSON and HTML under ``models/<model>/drift/<report_id>/``) becomes the model's current drift
report, the outcome is audited, and drift is alerted with the drifted features named.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform.core import storage
from ml_platform.core.alerts import drift_alert, send_alert
from ml_platform.core.helpers import redact_url, unknown
from ml_platform.lifecycle.records import (
    DriftReportRecord,
    StepContext,
    current_evaluation,
    model_root,
)
from ml_platform.lifecycle.reference import VersionReference, load_reference
from ml_platform.lifecycle.scored_window import (
    ScoredWindow,
    prediction_values,
    read_window,
    scored_by,
    window_snapshot,
)
from ml_platform.monitoring.drift import (
    ColumnDriftSettings,
    ColumnVerdict,
    DriftResult,
    DriftSettings,
    detect_drift,
)
from ml_platform.monitoring.reference import PREDICTION
from ml_platform.spec.catalog import Catalog, ResolvedFeatures
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.monitoring.performance import PerformanceVerdict


def monitor_drift(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    catalog: Catalog,
    step: StepContext,
    *,
    window: ScoredWindow | None = None,
) -> DriftReportRecord:
    """Judge a scored window against the champion's training reference and report on it.

    Args:
        spec: The model spec (its ``monitoring`` section, label source and primary metric).
        resolved: The model's resolved features (join keys and timestamp of the rows).
        catalog: The loaded specs (the label source, for rows whose labels arrived).
        step: The engines and run of this step (`StepContext`).
        window: The rows to judge; default: the newest predictions, restricted to the last
            ``monitoring.window`` when set.

    Returns:
        The report's record (also written as the model's current drift report).

    Raises:
        LookupError: The model has no champion.
        FileNotFoundError: No predictions to judge, or the champion has no stored reference.
        ValueError: ``monitoring.columns`` names a column the champion does not take.
    """
    window = window or ScoredWindow()
    champion = step.registry.champion_version(spec.name)
    if champion is None:
        raise LookupError(
            f"model '{spec.name}' has no champion to monitor; materialize '{spec.name}/champion'"
        )
    frame, source = read_window(spec, resolved, step, window)
    reference = load_reference(step.settings, step.registry, spec.name, champion)
    settings = drift_settings(spec, reference)
    scored_by_champion = scored_by(frame, champion)
    predictions = prediction_values(scored_by_champion) if len(scored_by_champion) else None
    if len(scored_by_champion) < len(frame):
        step.log(
            f"{len(frame) - len(scored_by_champion)} of {len(frame)} rows were scored by another "
            f"version than champion v{champion}: only its own predictions are judged"
        )
    result = detect_drift(reference.statistics, frame, predictions, settings)
    performance = performance_drift(spec, resolved, catalog, step, scored_by_champion, champion)
    snapshot = window_snapshot(frame, resolved, reference)
    report_id = drift_report_id(spec.name, champion, snapshot)
    directory = model_root(step.settings, spec.name, "drift", report_id)
    html_path = write_html(reference, frame, result, f"{directory}/report.html", step)
    record = report_record(
        spec, champion, report_id, result, performance, html_path, (source, snapshot), step
    )
    record = replace(record, plots=write_drift_plot(record, directory))
    storage.write_json(
        f"{directory}/report.json",
        {
            "record": record.to_dict(),
            "window": window.describe() if spec.monitoring.source == "predictions" else source,
            "drift": result.to_dict(),
            "performance": None if performance is None else performance.to_dict(),
        },
    )
    storage.write_pointer(model_root(step.settings, spec.name, "drift"), record.to_dict())
    audit_and_alert(record, result, step)
    return record


def drift_settings(spec: ModelSpec, reference: VersionReference) -> DriftSettings:
    """The spec's ``monitoring`` section as the drift library's settings.

    Raises:
        ValueError: ``monitoring.columns`` names a column that is neither a monitored input of
            the champion nor ``prediction``.
    """
    monitoring = spec.monitoring
    known = [*reference.statistics.columns, PREDICTION]
    for name in monitoring.columns:
        if name not in known:
            raise ValueError(
                f"spec '{spec.name}': monitoring.columns: {unknown('column', name, known)}"
            )
    return DriftSettings(
        drift_share=monitoring.drift_share,
        min_rows=monitoring.min_rows,
        columns={
            name: ColumnDriftSettings(test=column.test, threshold=column.threshold)
            for name, column in monitoring.columns.items()
        },
    )


def drift_report_id(model: str, version: str, window_snapshot_id: str) -> str:
    """The drift event id: the same window judged against the same version gives the same id."""
    return hashlib.sha256(f"{model}|{version}|{window_snapshot_id}".encode()).hexdigest()[:16]


def labelled_rows(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    catalog: Catalog,
    step: StepContext,
    scored: pd.DataFrame,
) -> pd.DataFrame | None:
    """The scored rows whose labels have arrived, with the label column; None if unjoinable.

    A label counts once it is known: present and, when the label source has an
    ``available_at_column``, available now. Rows are matched on the join keys and timestamp;
    online calls (``monitoring.source: calls``) on the identifiers their callers sent.
    """
    from ml_platform.datasets.training_set import read_label_rows

    if spec.monitoring.source == "calls":
        return labelled_calls(spec, resolved, catalog, step, scored)
    labels = read_label_rows(spec, resolved, catalog, step.settings)
    keys = [*resolved.entity_columns, resolved.timestamp_column]
    label = spec.label.column
    if any(k not in labels.columns or k not in scored.columns for k in keys):
        return None
    known = labels[label].notna()
    available = spec.label.available_at_column
    if available and available in labels.columns:
        known &= labels[available] <= datetime.now(UTC)
    arrived = labels.loc[known, [*keys, label]].drop_duplicates(keys, keep="last")
    return scored.drop(columns=[label], errors="ignore").merge(arrived, on=keys, how="inner")


CALL_COLUMNS = ("score", "model_version", "scored_at", "request_id", "role", "caller")
"""Columns of a calls window that are not the caller's identifiers (see ``calls_frame``)."""


def labelled_calls(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    catalog: Catalog,
    step: StepContext,
    calls: pd.DataFrame,
) -> pd.DataFrame | None:
    """The calls whose labels have arrived, matched through the identifiers callers sent.

    A call's time is not the label row's event time, so the match is on the identifiers the
    call carried (e.g. ``loan_id``) that the label source has, with the entity's join keys.

    Returns:
        The calls with the label column; None when no identifier is shared with the labels.
    """
    import pandas as pd

    from ml_platform.features.store import source_path

    _, source = catalog.sources()[spec.label.source]
    label, available = spec.label.column, spec.label.available_at_column
    not_identifiers = {
        label,
        available,
        resolved.timestamp_column,
        *resolved.model_inputs,
        *resolved.entity_columns,
        *CALL_COLUMNS,
    }
    identifiers = [
        c
        for c in calls.columns
        if c in source.columns and c not in not_identifiers and not c.startswith("score_")
    ]
    if not identifiers:
        return None
    entity = [c for c in resolved.entity_columns if c in calls.columns and c in source.columns]
    keys = [*identifiers, *entity]
    wanted = [*keys, label, *([available] if available else [])]
    labels = pd.read_parquet(source_path(step.settings, source.path), columns=wanted)
    known = labels[label].notna()
    if available:
        known &= pd.to_datetime(labels[available], utc=True) <= datetime.now(UTC)
    arrived = labels.loc[known, [*keys, label]].drop_duplicates(keys, keep="last")
    return calls.drop(columns=[label], errors="ignore").merge(arrived, on=keys, how="inner")


def evaluation_value(spec: ModelSpec, step: StepContext, champion: str) -> float | None:
    """The champion's primary metric at evaluation (the current evaluation, else its MLflow run)."""
    metric = spec.primary_metric
    try:
        report = current_evaluation(step.settings, spec.name)
    except FileNotFoundError:
        report = None
    if report is not None and report.version == champion:
        return report.metrics.get(metric)
    if report is not None and report.champion_version == champion and report.champion_metrics:
        return report.champion_metrics.get(metric)
    return step.registry.version_metric(spec.name, champion, metric)


def performance_drift(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    catalog: Catalog,
    step: StepContext,
    scored: pd.DataFrame,
    champion: str,
) -> PerformanceVerdict | None:
    """The primary metric on the champion's scored rows whose labels arrived, vs evaluation.

    Returns:
        The verdict (``insufficient_data`` below ``monitoring.min_rows`` labelled rows), or None
        when the scored rows cannot be matched with label rows.
    """
    from ml_platform.monitoring.performance import performance_drift as judge

    rows = labelled_rows(spec, resolved, catalog, step, scored)
    if rows is None:
        step.log("performance drift not judged: scored rows cannot be matched with labels")
        return None
    retrain_on = spec.monitoring.retrain_on
    arguments: dict[str, Any] = {
        "task": spec.task,
        "threshold": spec.evaluation.threshold,
        "primary_metric": spec.primary_metric,
        "evaluation_value": evaluation_value(spec, step, champion),
        "min_rows": spec.monitoring.min_rows,
        "max_drop": None if retrain_on is None else retrain_on.performance_drop,
    }
    if len(rows) < spec.monitoring.min_rows:
        # Too few to judge: the verdict says so without loading the model.
        return judge(truth=rows[spec.label.column].to_numpy(), prediction=None, **arguments)
    model = step.registry.load_model(spec.name, champion)
    truth = model.encode_labels(rows)
    return judge(truth=truth, prediction=prediction_values(rows), **arguments)


def write_html(
    reference: VersionReference,
    frame: pd.DataFrame,
    result: DriftResult,
    path: str,
    step: StepContext,
) -> str | None:
    """Evidently's drift report on bounded samples; None when there is nothing to show.

    A window too small for a verdict gets no report; a report Evidently cannot render is logged
    and left out: the verdicts are the platform's, the HTML only illustrates them.
    """
    from ml_platform.monitoring.evidently_report import write_evidently_report

    if result.status == "insufficient_data":
        return None
    statistics = reference.statistics
    try:
        return write_evidently_report(
            reference.sample, frame, statistics.numeric, statistics.categorical, path
        )
    except Exception as error:  # the report must not cost the verdict
        step.log(f"Evidently report not written: {type(error).__name__}: {error}")
        return None


def retrain_reasons(
    spec: ModelSpec, result: DriftResult, performance: PerformanceVerdict | None
) -> list[str]:
    """The ``monitoring.retrain_on`` triggers the report fires (none without a verdict)."""
    retrain_on = spec.monitoring.retrain_on
    if retrain_on is None or result.status == "insufficient_data":
        return []
    reasons = []
    judged = any(v.status in ("ok", "drift") for v in result.columns)
    if (
        retrain_on.drift_share is not None
        and judged
        and result.drift_share >= retrain_on.drift_share
    ):
        reasons.append("drift_share")
    if retrain_on.prediction_drift and result.prediction_drift:
        reasons.append("prediction_drift")
    drop = None if performance is None else performance.drop
    threshold = retrain_on.performance_drop
    if threshold is not None and drop is not None and drop >= threshold:
        reasons.append("performance_drop")
    return reasons


def report_record(
    spec: ModelSpec,
    champion: str,
    report_id: str,
    result: DriftResult,
    performance: PerformanceVerdict | None,
    html_path: str | None,
    window: tuple[str, str],
    step: StepContext,
) -> DriftReportRecord:
    """The report's record: the verdicts, the performance and what the sensor needs.

    ``window`` is the predictions file (or directory) judged and the window's snapshot id.
    """
    performance_drifted = performance is not None and performance.status == "drift"
    status = "drift" if performance_drifted and result.status == "ok" else result.status
    reason = result.reason
    if status == "drift":
        reason = "; ".join(drift_reasons(result, performance))
    prediction = result.prediction.to_dict() if result.prediction else None
    return DriftReportRecord(
        model=spec.name,
        model_version=champion,
        report_id=report_id,
        status=status,
        drift_share=result.drift_share,
        drifted_features=result.drifted_columns,
        prediction_drift=result.prediction_drift,
        performance=performance,
        rows=result.rows,
        html_path=html_path,
        created_at=datetime.now(UTC).isoformat(),
        retrain_reasons=retrain_reasons(spec, result, performance),
        data_snapshot_id=window[1],
        predictions_path=window[0],
        feature_scores={v.column: v.to_dict()["score"] for v in result.columns},
        prediction_drift_score=None if prediction is None else prediction["score"],
        drift_share_threshold=result.share_threshold,
        reason=reason,
        report_path=f"{model_root(step.settings, spec.name, 'drift', report_id)}/report.json",
        dagster_run_id=step.dagster_run_id,
        column_verdicts=[v.to_dict() for v in result.columns]
        + ([prediction] if prediction is not None else []),
    )


def write_drift_plot(record: DriftReportRecord, directory: str) -> dict[str, str]:
    """Draw each column's drift against its threshold beside the report.

    Returns:
        ``{"drift_scores": path}``, or nothing when no column has a score.
    """
    from ml_platform.evaluation.plots import DriftBar, drift_plot
    from ml_platform.monitoring.statistical_tests import TESTS

    bars = [
        DriftBar(
            column=v["column"],
            test=v["test"],
            score=float(v["score"]),
            threshold=float(v["threshold"]),
            measures=TESTS[v["test"]].measures,
            drifted=bool(v["drifted"]),
        )
        for v in record.column_verdicts
        if v.get("test") in TESTS and v.get("score") is not None and v.get("threshold")
    ]
    plot = drift_plot(bars)
    if plot is None:
        return {}
    path = f"{directory}/{plot.name}.png"
    storage.write_bytes(path, plot.png)
    return {plot.name: path}


def verdict_line(verdict: ColumnVerdict) -> str:
    """A column verdict in a few words: ``wasserstein 0.83 >= 0.1``."""
    if verdict.test is None or verdict.score is None or verdict.threshold is None:
        return verdict.reason or verdict.status
    from ml_platform.monitoring.statistical_tests import TESTS

    test = TESTS.get(verdict.test)
    direction = test.drift_when if test else "vs"
    return f"{verdict.test} {verdict.score:.4g} {direction} {verdict.threshold:g}"


def drift_reasons(result: DriftResult, performance: PerformanceVerdict | None) -> list[str]:
    """Why the window counts as drifted, one line per signal."""
    reasons = []
    if result.dataset_drift:
        reasons.append(
            f"{len(result.drifted_columns)} of {len(result.columns)} inputs drifted "
            f"({result.drift_share:.0%} >= {result.share_threshold:.0%}): "
            + ", ".join(result.drifted_columns)
        )
    elif result.drifted_columns:
        reasons.append(
            "drifted inputs (below the drift share): " + ", ".join(result.drifted_columns)
        )
    if result.prediction is not None and result.prediction.drifted:
        reasons.append(f"prediction drifted: {verdict_line(result.prediction)}")
    if performance is not None and performance.status == "drift" and performance.reason:
        reasons.append(performance.reason)
    return reasons


def audit_and_alert(record: DriftReportRecord, result: DriftResult, step: StepContext) -> None:
    """Audit the report (``drift_detected`` or ``drift_checked``); alert when it drifted."""
    step.audit.record(
        record.model,
        "drift_detected" if record.drifted else "drift_checked",
        model_version=record.model_version,
        data_snapshot_id=record.data_snapshot_id,
        dagster_run_id=step.dagster_run_id,
        rows=record.rows,
        details={
            "report_id": record.report_id,
            "status": record.status,
            "drift_share": record.drift_share,
            "drifted_features": record.drifted_features,
            "prediction_drift": record.prediction_drift,
            "performance": None if record.performance is None else record.performance.__dict__,
            "retrain_reasons": record.retrain_reasons,
            "html_path": record.html_path,
            "reason": record.reason,
        },
    )
    step.log(f"drift report {record.report_id}: {record.status} ({record.reason or 'no drift'})")
    if not record.drifted:
        return
    performance = record.performance
    alert = drift_alert(
        record.model,
        record.model_version,
        record.report_id,
        {v.column: verdict_line(v) for v in result.columns if v.drifted},
        prediction_drift=verdict_line(result.prediction)
        if result.prediction is not None and result.prediction.drifted
        else None,
        performance=performance.reason
        if performance is not None and performance.status == "drift"
        else None,
        report_url=redact_url(record.html_path) if record.html_path else None,
        run_id=step.dagster_run_id,
    )
    send_alert(alert, step.settings, audit=step.audit)
