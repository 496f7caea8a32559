"""Failure alerts: every failed run is reported, with the blocking checks that failed in it."""

from __future__ import annotations

import dagster as dg

from assets.keys import MODEL_TAG
from resources import AuditLogResource, StorageResource


@dg.run_failure_sensor(
    name="ml_platform_failure_alerts",
    description="Alerts (audit log, ML_PLATFORM_ALERT_WEBHOOK, ML_PLATFORM_ALERT_HANDLER) when a "
    "run fails, with the blocking checks that failed in it.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def failure_alerts(
    context: dg.RunFailureSensorContext, storage: StorageResource, audit: AuditLogResource
) -> None:
    """Send an alert naming the failed run, its model and why it failed."""
    from dataclasses import replace

    from ml_platform.core.alerts import Alert, send_alert
    from ml_platform.core.helpers import redact_urls

    run = context.dagster_run
    reasons = failed_checks(context.instance, run.run_id)
    if context.failure_event.message:
        reasons.append(context.failure_event.message.splitlines()[0])
    alert = Alert(
        title=f"run {run.run_id[:8]} of {run.job_name} failed",
        model=run.tags.get(MODEL_TAG),
        run_id=run.run_id,
        job_name=run.job_name,
        # A failure message can quote a location with its credentials: the alert leaves them out.
        reasons=[redact_urls(reason) for reason in reasons],
    )
    # send_alert records the alert in the audit log its settings name: this deployment's.
    settings = replace(storage.settings(), audit_url=audit.audit_log().url)
    channels = send_alert(alert, settings)
    context.log.info(f"alerted on {', '.join(channels)}: {alert.title}")


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Every failed asset check evaluation of a run.

    Args:
        instance: the Dagster instance that holds the run's events.
        run_id: the run.

    Returns:
        ``"<asset>: <check> failed: <reason>"`` per failed check, in event order.
    """
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    reasons = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        evaluation = event.event_specific_data
        if getattr(evaluation, "passed", True):
            continue
        description = getattr(evaluation, "description", None) or ""
        key = evaluation.asset_key.to_user_string()  # type: ignore[union-attr]
        reasons.append(f"{key}: {evaluation.check_name} failed: {description}".rstrip(": "))  # type: ignore[union-attr]
    return reasons
