"""Alerts for failed gates and runs: the hook point users connect to Slack, e-mail or paging.

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
    """What failed, where, and why."""

    title: str
    model: str | None
    run_id: str | None
    job_name: str | None
    reasons: list[str] = field(default_factory=list)
    url: str | None = None

    def text(self) -> str:
        lines = [f":rotating_light: {self.title}"]
        lines += [f"- {reason}" for reason in self.reasons]
        if self.url:
            lines.append(self.url)
        return "\n".join(lines)


def send_alert(alert: Alert, settings: PlatformSettings) -> list[str]:
    """Deliver ``alert`` on every configured channel; returns the channels that took it."""
    delivered = []
    AuditLog(settings.audit_url).record(
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
