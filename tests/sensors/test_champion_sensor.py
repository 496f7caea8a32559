"""The champion audit sensor on a real MLflow registry and audit log: alerts once per version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.lifecycle.champion_audit import UNEXPLAINED_ACTION
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import CHAMPION_ALIAS
from resources import AuditLogResource, ModelRegistryResource, StorageResource
from sensors.champion import CHAMPION_SENSOR, INTERVAL_SECONDS
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = loans.MODEL
ALERTS: list[Any] = []


def capture_alert(alert: Any) -> None:
    """An ML_PLATFORM_ALERT_HANDLER for tests."""
    ALERTS.append(alert)


def _tick(sensor: dg.SensorDefinition) -> str:
    context = dg.build_sensor_context(
        resources={
            "registry": ModelRegistryResource(),
            "audit": AuditLogResource(),
            "storage": StorageResource(),
        }
    )
    result = sensor.evaluate_tick(context)
    assert not result.run_requests
    return result.skip_message or ""


def test_the_sensor_alerts_once_per_version_moved_outside_the_platform(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_PLATFORM_ALERT_HANDLER", f"{__name__}:capture_alert")
    monkeypatch.delenv("ML_PLATFORM_ALERT_WEBHOOK", raising=False)
    ALERTS.clear()
    defs = build_definitions(PROJECT_ROOT, str(loans.write_specs(tmp_path / "specs")))
    sensor = defs.resolve_sensor_def(CHAMPION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == INTERVAL_SECONDS

    settings = PlatformSettings.from_env()
    registry = ModelRegistry.for_settings(settings)
    audit = AuditLog(settings.audit_url)
    registry.client.create_registered_model(MODEL)
    for _ in range(3):
        registry.client.create_model_version(MODEL, source=str(tmp_path), run_id=None)
    audit.record(MODEL, "promoted", model_version="1")
    registry.set_champion(MODEL, "1")
    assert "every champion alias is explained" in _tick(sensor)

    ui = MlflowClient(settings.mlflow_tracking_uri)  # what MLflow's UI does, outside the platform
    ui.set_registered_model_alias(MODEL, CHAMPION_ALIAS, "2")
    for _ in range(2):
        assert f"{MODEL} v2" in _tick(sensor)
    ui.set_registered_model_alias(MODEL, CHAMPION_ALIAS, "3")
    assert f"{MODEL} v3" in _tick(sensor)

    unexplained = audit.events(MODEL, UNEXPLAINED_ACTION)
    assert [(e.details["alias_version"], e.details["explained_version"]) for e in unexplained] == [
        ("2", "1"),
        ("3", "1"),
    ]
    assert {e.details["detected_by"] for e in unexplained} == {"sensor"}
    assert [alert.details["alias_version"] for alert in ALERTS] == ["2", "3"]
    assert all("moved outside the platform" in alert.title for alert in ALERTS)
