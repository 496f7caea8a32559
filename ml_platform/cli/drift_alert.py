"""``ml-platform drift-alert MODEL``: an external drift alert, for the model's drift sensor."""

from __future__ import annotations

from ml_platform.cli.common import catalog_with
from ml_platform.cli.output import echo


def drift_alert(model: str, reason: str, source: str | None) -> int:
    """Record an external drift alert that the model's drift sensor reacts to.

    Args:
        model: the model that drifted.
        reason: why, in words (shown on the retraining run).
        source: who raised it, e.g. the external monitor.

    Returns:
        The exit status: 0 when recorded, 2 for an unknown model or an empty reason.
    """
    from assets.keys import drift_sensor_name
    from ml_platform.core.audit import AuditLog
    from ml_platform.core.helpers import unknown
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.lifecycle.drift_alerts import raise_drift_alert

    catalog = catalog_with([])
    if model not in catalog.models:
        echo(unknown("model", model, catalog.models), err=True)
        return 2
    try:
        alert = raise_drift_alert(
            AuditLog(PlatformSettings.from_env().audit_url), model, reason, source
        )
    except ValueError as error:
        echo(str(error), err=True)
        return 2
    monitoring = catalog.models[model].monitoring
    echo(f"recorded drift alert {alert.alert_id} for '{model}' in the audit log")
    echo(
        f"{drift_sensor_name(model)} requests one retraining for it (run key "
        f"{model}-drift-{alert.alert_id}); it waits while a training run is in flight or within "
        f"monitoring.cooldown ({monitoring.cooldown}) of the last drift retraining"
    )
    if not monitoring.sensor_running:
        echo(
            f"note: {drift_sensor_name(model)} is stopped by default (the spec sets no "
            "monitoring.retrain_on); start it in the Dagster UI (Automation) to react to alerts"
        )
    return 0
