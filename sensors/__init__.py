"""Schedules and sensors built from the specs: retraining cadence, new data, failure alerts."""

from __future__ import annotations

import dagster as dg

from ml_platform.spec import Catalog
from resources import PlatformResource

MODEL_TAG = "ml_platform/model"


def training_job_name(model: str) -> str:
    return f"{model}_training"


def scoring_job_name(model: str) -> str:
    return f"{model}_scoring"


def build_schedules(catalog: Catalog) -> list[dg.ScheduleDefinition]:
    """A retraining schedule per model whose spec sets ``retraining.schedule``."""
    return [
        dg.ScheduleDefinition(
            name=f"{name}_retraining_schedule",
            job_name=training_job_name(name),
            cron_schedule=spec.retraining.schedule,
            execution_timezone=spec.retraining.timezone,
            description=f"Retrain {name} on its cadence ({spec.retraining.schedule}).",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags={MODEL_TAG: name},
        )
        for name, spec in catalog.models.items()
        if spec.retraining.schedule
    ]


def _new_data_sensor(catalog: Catalog, model: str) -> dg.SensorDefinition:
    spec = catalog.models[model]
    _, source = catalog.sources()[spec.label.source]

    @dg.sensor(
        name=f"{model}_new_labels_sensor",
        job_name=training_job_name(model),
        minimum_interval_seconds=300,
        description=f"Retrain {model} when its label source '{source.name}' changes.",
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def new_labels(context: dg.SensorEvaluationContext, platform: PlatformResource):
        from ml_platform.features import source_path
        from ml_platform.storage import fingerprint

        version = fingerprint(source_path(platform.settings(), source.path))
        if version is None:
            return dg.SkipReason(f"label source '{source.name}' does not exist yet")
        if version == context.cursor:
            return dg.SkipReason(f"label source '{source.name}' unchanged")
        context.update_cursor(version)
        return dg.RunRequest(run_key=f"{model}-{version}", tags={MODEL_TAG: model})

    return new_labels


def build_sensors(catalog: Catalog) -> list[dg.SensorDefinition]:
    """Per-model new-label sensors, and one sensor that alerts on every failed run."""
    sensors: list[dg.SensorDefinition] = [
        *(_new_data_sensor(catalog, name) for name in catalog.models),
        failure_alerts,
    ]
    if any(spec.retraining.automation for spec in catalog.models.values()):
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                "ml_platform_automation",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
                description="Evaluates the models' automation conditions (retraining.automation).",
            )
        )
    return sensors


@dg.run_failure_sensor(
    name="ml_platform_failure_alerts",
    description="Alerts (audit log, ML_PLATFORM_ALERT_WEBHOOK, ML_PLATFORM_ALERT_HANDLER) when a "
    "run fails, with the blocking checks that failed in it.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def failure_alerts(context: dg.RunFailureSensorContext, platform: PlatformResource) -> None:
    from ml_platform.alerts import Alert, send_alert

    run = context.dagster_run
    reasons = failed_checks(context.instance, run.run_id)
    if context.failure_event.message:
        reasons.append(context.failure_event.message.splitlines()[0])
    alert = Alert(
        title=f"run {run.run_id[:8]} of {run.job_name} failed",
        model=run.tags.get(MODEL_TAG),
        run_id=run.run_id,
        job_name=run.job_name,
        reasons=reasons,
    )
    channels = send_alert(alert, platform.settings())
    context.log.info(f"alerted on {', '.join(channels)}: {alert.title}")


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """'asset: check: reason' for every failed asset check evaluation of a run."""
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
