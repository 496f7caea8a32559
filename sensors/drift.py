"""Drift sensors: retrain a model once per drift event, when drift crosses ``retrain_on``.

Each tick reads the model's newest drift report (``<model>/drift_report``) and the external drift
alerts raised since the last tick (``ml-platform drift-alert``, audit action ``drift_alert``).
A report fires when one of the spec's ``monitoring.retrain_on`` triggers fired in it (its
``retrain_reasons``); an external alert always fires. A firing event requests one run of the
model's training job (features to champion, every gate included) with the run key
``<model>-drift-<event id>``, so Dagster never starts two runs for one event, even when two
evaluations race. A fired event waits, and the tick says why, while a training run of the model
is queued or running, or inside ``monitoring.cooldown`` after the last drift-triggered
retraining; a newer report replaces a waiting one. The cursor (JSON) keeps the last report and
alert handled and the last trigger, in the instance's storage, so it survives a daemon restart.

The sensor runs by default when the spec sets ``monitoring.retrain_on`` (or
``monitoring.sensor: running``) and is stopped otherwise: retraining spends compute and moves the
champion, so a model retrains on drift only when its owner has said which drift should.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from assets.keys import (
    DRIFT_EVENT_TAG,
    DRIFT_REASONS_TAG,
    MODEL_TAG,
    drift_sensor_name,
    training_job_name,
)
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.values import parse_duration
from resources import AuditLogResource, StorageResource

if TYPE_CHECKING:
    from ml_platform.lifecycle.drift_alerts import DriftAlert
    from ml_platform.lifecycle.records import DriftReportRecord

IN_FLIGHT = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)
"""Statuses of a training run that make a drift event wait."""


@dataclass(frozen=True)
class DriftCursor:
    """What the drift sensor has handled, stored as its cursor (JSON).

    Attributes:
        report_id: The last drift report handled (retrained for, or judged not to need it).
        alert_id: The last external drift alert handled.
        triggered_at: When the sensor last requested a retraining (ISO 8601, UTC).
        event_id: The drift event of that retraining.
    """

    report_id: str | None = None
    alert_id: str | None = None
    triggered_at: str | None = None
    event_id: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> DriftCursor:
        """The cursor ``dumps`` wrote; a missing or unreadable one starts afresh."""
        try:
            values = json.loads(text or "{}")
        except json.JSONDecodeError:
            return cls()
        if not isinstance(values, dict):
            return cls()
        return cls(**{name: values.get(name) for name in cls.__dataclass_fields__})

    def dumps(self) -> str:
        """The cursor as JSON."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class DriftEvent:
    """A drift report or external alert that asks for a retraining.

    Attributes:
        event_id: The report id or alert id (the run key's suffix).
        reasons: What fired: ``retrain_on`` triggers, or ``external_alert``.
        description: One line for the tick's log.
    """

    event_id: str
    reasons: list[str] = field(default_factory=list)
    description: str = ""


@dataclass(frozen=True)
class DriftDecision:
    """One tick's verdict: the event to retrain for, or why not; and the cursor after it."""

    cursor: DriftCursor
    event: DriftEvent | None = None
    skip_reason: str = ""


def _report_event(report: DriftReportRecord, retrain_on_set: bool) -> DriftEvent | str:
    """The event of a new report, or why it asks for no retraining."""
    if report.status == "insufficient_data":
        why = report.reason or f"{report.rows} rows"
        return f"insufficient data in drift report {report.report_id}: {why}"
    if not report.retrain_reasons:
        if not retrain_on_set:
            return (
                f"drift report {report.report_id} ({report.status}): monitoring.retrain_on is "
                "not set, so drift is reported and never retrains the model"
            )
        return (
            f"below threshold: drift report {report.report_id} fired no monitoring.retrain_on "
            f"trigger (drift share {report.drift_share:.2f}, prediction drift "
            f"{report.prediction_drift})"
        )
    drifted = ", ".join(report.drifted_features) or "none"
    return DriftEvent(
        report.report_id,
        list(report.retrain_reasons),
        f"drift report {report.report_id} fired {', '.join(report.retrain_reasons)} "
        f"(drifted features: {drifted}; drift share {report.drift_share:.2f})",
    )


def _alert_event(alert: DriftAlert) -> DriftEvent:
    source = f" from {alert.source}" if alert.source else ""
    return DriftEvent(
        alert.alert_id,
        ["external_alert"],
        f"external drift alert {alert.alert_id}{source}: {alert.reason}",
    )


def _duration(delta: timedelta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def decide(
    cursor: DriftCursor,
    report: DriftReportRecord | None,
    alerts: list[DriftAlert],
    *,
    now: datetime,
    cooldown: timedelta,
    in_flight_run: str | None = None,
    retrain_on_set: bool = True,
) -> DriftDecision:
    """Decide whether a drift event asks for a retraining now.

    Args:
        cursor: What the sensor handled before.
        report: The newest drift report, if any.
        alerts: External drift alerts raised after ``cursor.alert_id``, oldest first.
        now: The evaluation time (UTC).
        cooldown: The spec's ``monitoring.cooldown``.
        in_flight_run: A queued or running training run of the model (``"<id> (<status>)"``).
        retrain_on_set: Whether the spec sets ``monitoring.retrain_on`` (for the skip reason).

    Returns:
        The event to retrain for and the cursor that marks it handled, or a skip reason and the
        cursor to keep: a report or alert that asks for nothing is handled; one that waits for a
        running retraining or the cooldown is not.
    """
    new_report = report if report is not None and report.report_id != cursor.report_id else None
    if new_report is None and not alerts:
        seen = cursor.report_id or "none yet"
        return DriftDecision(cursor, skip_reason=f"no new drift report (last: {seen}) or alert")
    handled = replace(
        cursor,
        report_id=new_report.report_id if new_report else cursor.report_id,
        alert_id=alerts[-1].alert_id if alerts else cursor.alert_id,
    )
    events: list[DriftEvent] = []
    notes: list[str] = []
    if new_report is not None:
        judged = _report_event(new_report, retrain_on_set)
        events += [judged] if isinstance(judged, DriftEvent) else []
        notes += [judged] if isinstance(judged, str) else []
    events += [_alert_event(alert) for alert in alerts]
    if not events:
        return DriftDecision(handled, skip_reason="; ".join(notes))
    # The measured report names the event when it fired; every alert of the tick joins it.
    event = DriftEvent(
        events[0].event_id,
        list(dict.fromkeys(reason for e in events for reason in e.reasons)),
        "; ".join(e.description for e in events),
    )
    if in_flight_run is not None:
        return DriftDecision(
            cursor,
            skip_reason=f"a training run is already queued or running ({in_flight_run}); "
            f"{event.description} waits for it",
        )
    if cursor.triggered_at is not None:
        ends = datetime.fromisoformat(cursor.triggered_at) + cooldown
        if now < ends:
            return DriftDecision(
                cursor,
                skip_reason=f"cooldown: the last drift retraining (event {cursor.event_id}) was "
                f"requested at {cursor.triggered_at}; {_duration(ends - now)} left of "
                f"monitoring.cooldown; {event.description} waits",
            )
    triggered = replace(handled, triggered_at=now.isoformat(), event_id=event.event_id)
    return DriftDecision(triggered, event=event)


def in_flight_training_run(instance: dg.DagsterInstance, model: str) -> str | None:
    """A queued or running run of the model's training job, as ``"<run id> (<status>)"``."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=training_job_name(model), tags={MODEL_TAG: model}, statuses=list(IN_FLIGHT)
        ),
        limit=1,
    )
    return f"{runs[0].run_id} ({runs[0].status.value})" if runs else None


def build_drift_sensor(catalog: Catalog, model: str) -> dg.SensorDefinition:
    """The drift sensor of one model (see the module docstring for how it decides).

    Args:
        catalog: the loaded specs.
        model: the model's name.

    Returns:
        The sensor, targeting the model's training job; running by default when the spec sets
        ``monitoring.retrain_on`` (or ``monitoring.sensor: running``).
    """
    monitoring = catalog.models[model].monitoring
    cooldown = parse_duration(monitoring.cooldown)
    retrain_on = monitoring.retrain_on
    triggers = (
        ", ".join(f"{name}={value}" for name, value in retrain_on.model_dump().items() if value)
        if retrain_on
        else "not set: external alerts only"
    )

    @dg.sensor(
        name=drift_sensor_name(model),
        job_name=training_job_name(model),
        minimum_interval_seconds=60,
        description=f"Retrain {model} once per drift event: a drift report firing "
        f"monitoring.retrain_on ({triggers}) or an external drift alert; cooldown "
        f"{monitoring.cooldown}.",
        default_status=dg.DefaultSensorStatus.RUNNING
        if monitoring.sensor_running
        else dg.DefaultSensorStatus.STOPPED,
    )
    def drift(
        context: dg.SensorEvaluationContext, storage: StorageResource, audit: AuditLogResource
    ) -> dg.RunRequest | dg.SkipReason:
        from ml_platform.lifecycle.drift_alerts import drift_alerts
        from ml_platform.lifecycle.records import current_drift_report

        cursor = DriftCursor.parse(context.cursor)
        try:
            report = current_drift_report(storage.settings(), model)
        except FileNotFoundError:
            report = None
        alerts = drift_alerts(audit.audit_log(), model, after=cursor.alert_id)
        # The run query matters only for a new event: most ticks have none, and skip it.
        new = alerts or (report is not None and report.report_id != cursor.report_id)
        decision = decide(
            cursor,
            report,
            alerts,
            now=datetime.now(UTC),
            cooldown=cooldown,
            in_flight_run=in_flight_training_run(context.instance, model) if new else None,
            retrain_on_set=retrain_on is not None,
        )
        if decision.cursor != cursor:
            context.update_cursor(decision.cursor.dumps())
        if decision.event is None:
            return dg.SkipReason(decision.skip_reason)
        context.log.info(f"requesting a retraining of {model}: {decision.event.description}")
        return dg.RunRequest(
            run_key=f"{model}-drift-{decision.event.event_id}",
            tags={
                MODEL_TAG: model,
                DRIFT_EVENT_TAG: decision.event.event_id,
                DRIFT_REASONS_TAG: ",".join(decision.event.reasons),
            },
        )

    return drift


def build_drift_sensors(catalog: Catalog) -> list[dg.SensorDefinition]:
    """A drift sensor per model of the catalog."""
    return [build_drift_sensor(catalog, name) for name in catalog.models]
