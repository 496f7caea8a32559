"""Drift alerts raised outside the platform: recorded in the audit log, read by the drift sensor.

A team that already runs a monitor elsewhere raises an alert with
``ml-platform drift-alert MODEL --reason ...``; it becomes an audit event (action
``drift_alert``) with its own id, and the model's drift sensor treats it like a drifted report:
one retraining run per alert id, under the same cooldown.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ml_platform.core.audit import AuditLog

DRIFT_ALERT_ACTION = "drift_alert"
"""The audit log action of an external drift alert."""


@dataclass(frozen=True)
class DriftAlert:
    """A drift alert raised from outside the platform.

    Attributes:
        alert_id: Unique id of the alert (the drift event id of the retraining it starts).
        model: The model the alert is about.
        reason: Why the sender thinks the model drifted.
        source: Who or what raised it (a monitor's name), if given.
        raised_at: When it was recorded (UTC).
    """

    alert_id: str
    model: str
    reason: str
    source: str | None
    raised_at: datetime


def raise_drift_alert(
    audit: AuditLog, model: str, reason: str, source: str | None = None
) -> DriftAlert:
    """Record an external drift alert for ``model`` in the audit log.

    Args:
        audit: The audit log the model's drift sensor reads.
        model: The model's name.
        reason: Why the model is thought to have drifted (shown in the sensor's run tags).
        source: Who or what raised the alert, e.g. the external monitor's name.

    Returns:
        The recorded alert, with its new id.

    Raises:
        ValueError: ``reason`` is empty.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("a drift alert needs a reason, e.g. --reason 'PSI 0.4 on amount'")
    alert_id = uuid.uuid4().hex[:16]
    event = audit.record(
        model,
        DRIFT_ALERT_ACTION,
        details={"alert_id": alert_id, "reason": reason, "source": source},
    )
    return DriftAlert(alert_id, model, reason, source, event.recorded_at)


def drift_alerts(audit: AuditLog, model: str, after: str | None = None) -> list[DriftAlert]:
    """External drift alerts of ``model``, oldest first.

    Args:
        audit: The audit log.
        model: The model's name.
        after: An alert id: only alerts recorded after it are returned. An id that is not in the
            log (``None`` included) returns every alert.

    Returns:
        The alerts.
    """
    alerts = [
        DriftAlert(
            alert_id=str(event.details.get("alert_id", "")),
            model=event.model,
            reason=str(event.details.get("reason", "")),
            source=event.details.get("source"),
            raised_at=event.recorded_at,
        )
        for event in audit.events(model, DRIFT_ALERT_ACTION)
    ]
    ids = [alert.alert_id for alert in alerts]
    if after is not None and after in ids:
        return alerts[ids.index(after) + 1 :]
    return alerts
