"""Champion audit sensor: a ``champion`` alias moved outside the platform is recorded and alerted.

Every few minutes the sensor compares each model's alias in MLflow with the version the audit log
explains (the newest ``promoted`` or ``override_promoted`` event, see
``ml_platform.lifecycle.champion_audit``). An unexplained alias is recorded (audit action
``unexplained_champion``) and alerted once per model and alias version, whichever of the sensor,
a promotion or a scoring run saw it first; scoring refuses it until the override job records it.
"""

from __future__ import annotations

import dagster as dg

from ml_platform.spec.catalog import Catalog
from resources import AuditLogResource, ModelRegistryResource, StorageResource

CHAMPION_SENSOR = "ml_platform_champion_audit"
"""The sensor's name."""
INTERVAL_SECONDS = 300


def build_champion_sensor(catalog: Catalog) -> dg.SensorDefinition:
    """The sensor that checks every model's champion alias against the audit log.

    Args:
        catalog: the loaded specs (the models checked).

    Returns:
        The sensor, running by default; it requests no run.
    """
    models = sorted(catalog.models)

    @dg.sensor(
        name=CHAMPION_SENSOR,
        minimum_interval_seconds=INTERVAL_SECONDS,
        description="Alerts (audit log, ML_PLATFORM_ALERT_WEBHOOK, ML_PLATFORM_ALERT_HANDLER) once "
        "per model and version when MLflow's champion alias points at a version no promotion or "
        "override in the audit log put there.",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def champion_audit(
        context: dg.SensorEvaluationContext,
        registry: ModelRegistryResource,
        audit: AuditLogResource,
        storage: StorageResource,
    ) -> dg.SkipReason:
        """Check each model's champion alias; record and alert an unexplained one once."""
        from dataclasses import replace

        from ml_platform.lifecycle.champion_audit import audit_champion, explained_champion

        audit_log = audit.audit_log()
        # send_alert records the alert in the audit log its settings name: this deployment's.
        settings = replace(storage.settings(), audit_url=audit_log.url)
        mlflow = registry.registry()
        # One MLflow search for every alias; only an alias the audit log does not explain is
        # checked again, under the model's champion lock (a lock and an MLflow call per model
        # made a tick of a hundred models last a minute).
        aliases = mlflow.champion_versions()
        unexplained = []
        for model in models:
            alias = aliases.get(model)
            if alias is None or alias == explained_champion(audit_log, model):
                continue
            check = audit_champion(mlflow, audit_log, settings, model, detected_by="sensor")
            if check.unexplained:
                context.log.warning(check.describe())
                unexplained.append(f"{model} v{check.alias_version}")
        if unexplained:
            return dg.SkipReason(f"unexplained champions (alerted once): {', '.join(unexplained)}")
        return dg.SkipReason(f"every champion alias is explained ({len(models)} models checked)")

    return champion_audit
