"""Alerts for failed gates and runs, and for drift: the hook point for Slack, e-mail, paging.

Every alert is written to the audit log (action ``alert``). Then, when configured:
- ``ML_PLATFORM_ALERT_WEBHOOK``: a Slack-compatible incoming-webhook URL (JSON ``{"text": ...}``);
- ``ML_PLATFORM_ALERT_HANDLER``: ``package.module:function`` called with the :class:`Alert`
  (e-mail, PagerDuty, Teams...).
A failing channel is logged and never hides the alert from the other channels.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings

WEBHOOK_ENV = "ML_PLATFORM_ALERT_WEBHOOK"
HANDLER_ENV = "ML_PLATFORM_ALERT_HANDLER"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """What failed (or drifted), where, and why.

    Attributes:
        title: One line saying what happened.
        model: The model concerned, if any.
        run_id: The Dagster run concerned, if any.
        job_name: The job concerned, if any.
        reasons: One line per reason (a failed check, a drifted feature).
        url: A link to follow (the run, the drift report).
        details: Structured facts a handler may use (a drift alert's ``drifted_features``,
            ``report_id``, ``model_version``...).
    """

    title: str
    model: str | None
    run_id: str | None
    job_name: str | None
    reasons: list[str] = field(default_factory=list)
    url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The alert as a chat message: the title, one line per reason, the link."""
        lines = [f":rotating_light: {self.title}"]
        lines += [f"- {reason}" for reason in self.reasons]
        if self.url:
            lines.append(self.url)
        return "\n".join(lines)


def drift_alert(
    model: str,
    model_version: str,
    report_id: str,
    drifted_features: dict[str, str],
    *,
    prediction_drift: str | None = None,
    performance: str | None = None,
    report_url: str | None = None,
    run_id: str | None = None,
) -> Alert:
    """The alert for a drift report that found drift, naming every drifted feature.

    Args:
        model: The model.
        model_version: The champion version whose training reference the window drifted from.
        report_id: The drift report (the drift event id).
        drifted_features: Each drifted input column with its test's outcome, e.g.
            ``{"credit_score": "wasserstein 0.83 >= 0.1"}``.
        prediction_drift: The prediction drift test's outcome, when the output drifted.
        performance: The performance drop, when the primary metric fell past its threshold.
        report_url: The drift report (HTML) to open.
        run_id: The Dagster run that made the report.

    Returns:
        The alert; ``details`` holds the drifted features, version and report id.
    """
    features = ", ".join(drifted_features) or "no input feature"
    reasons = [f"feature {name} drifted: {outcome}" for name, outcome in drifted_features.items()]
    if prediction_drift:
        reasons.append(f"prediction drifted: {prediction_drift}")
    if performance:
        reasons.append(f"performance dropped: {performance}")
    return Alert(
        title=f"Drift in {model} v{model_version}: {features}",
        model=model,
        run_id=run_id,
        job_name=None,
        reasons=reasons,
        url=report_url,
        details={
            "kind": "drift",
            "model_version": model_version,
            "report_id": report_id,
            "drifted_features": list(drifted_features),
            "prediction_drift": prediction_drift is not None,
        },
    )


def send_alert(
    alert: Alert, settings: PlatformSettings, audit: AuditLog | None = None
) -> list[str]:
    """Deliver ``alert`` on every configured channel; returns the channels that took it.

    Args:
        alert: The alert.
        settings: The platform settings (their audit log, unless ``audit`` is given).
        audit: The audit log to record the alert in (a step's own); default: the settings'.

    Returns:
        ``audit``, then ``webhook`` and ``handler`` when configured and delivered.
    """
    delivered = []
    (audit or AuditLog(settings.audit_url)).record(
        alert.model or "platform",
        "alert",
        dagster_run_id=alert.run_id,
        details=asdict(alert),
    )
    delivered.append("audit")
    webhook = os.environ.get(WEBHOOK_ENV)
    if webhook:
        try:
            request = urllib.request.Request(
                webhook,
                data=json.dumps({"text": alert.text()}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            delivered.append("webhook")
        except OSError as error:
            logger.error("alert webhook failed: %s", error)
    handler_path = os.environ.get(HANDLER_ENV)
    if handler_path:
        from ml_platform.core.helpers import import_object

        try:
            handler: Any = import_object(handler_path, HANDLER_ENV)
            handler(alert)
            delivered.append("handler")
        except Exception as error:  # a broken handler must not hide the alert elsewhere
            logger.error("alert handler %s failed: %s", handler_path, error)
    return delivered
