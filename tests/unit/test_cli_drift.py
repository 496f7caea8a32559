"""`ml-platform drift-alert` and the drift demo's switch: external alerts in the audit log."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from examples.payments.config import Settings, validate_settings
from ml_platform.cli.demo import DEMO_DRIFT_START, DRIFT_START_ENV
from ml_platform.cli.main import main
from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.lifecycle.drift_alerts import DRIFT_ALERT_ACTION, drift_alerts, raise_drift_alert
from ml_platform.spec.loading import load_project
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def audit() -> AuditLog:
    return AuditLog(PlatformSettings.from_env().audit_url)


def test_drift_alert_records_an_alert_with_its_id_reason_and_source(
    loans_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["drift-alert", loans.MODEL, "--reason", "PSI 0.4 on amount", "--source", "arize"]
    )
    assert status == 0
    (alert,) = drift_alerts(audit(), loans.MODEL)
    assert (alert.reason, alert.source, alert.model) == (
        "PSI 0.4 on amount",
        "arize",
        "loan_default",
    )
    output = capsys.readouterr().out
    assert f"recorded drift alert {alert.alert_id} for 'loan_default'" in output
    assert f"run key loan_default-drift-{alert.alert_id}" in output
    assert "monitoring.cooldown (24h)" in output
    # This spec sets no monitoring.retrain_on: the sensor is stopped until someone starts it.
    assert "loan_default_drift_sensor is stopped by default" in output
    (event,) = audit().events(loans.MODEL, DRIFT_ALERT_ACTION)
    assert event.details == {
        "alert_id": alert.alert_id,
        "reason": "PSI 0.4 on amount",
        "source": "arize",
    }


def test_alerts_after_an_id_are_the_newer_ones_only(loans_spec: Path) -> None:
    first = raise_drift_alert(audit(), loans.MODEL, "first")
    second = raise_drift_alert(audit(), loans.MODEL, "second", source="monitor")
    assert first.alert_id != second.alert_id
    assert [a.reason for a in drift_alerts(audit(), loans.MODEL)] == ["first", "second"]
    assert [a.reason for a in drift_alerts(audit(), loans.MODEL, after=first.alert_id)] == [
        "second"
    ]
    assert drift_alerts(audit(), loans.MODEL, after=second.alert_id) == []
    assert drift_alerts(audit(), "other_model") == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drift-alert", "loan_defualt", "--reason", "x"], "unknown model 'loan_defualt'"),
        (["drift-alert", loans.MODEL, "--reason", "  "], "a drift alert needs a reason"),
    ],
)
def test_drift_alert_refuses_an_unknown_model_or_an_empty_reason(
    loans_spec: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert drift_alerts(audit(), loans.MODEL) == []


def test_drift_alert_requires_a_reason(loans_spec: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["drift-alert", loans.MODEL])
    assert exit_info.value.code == 2


def test_the_demo_drift_variable_reaches_the_payments_generator(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def generator_settings() -> Settings:
        generator = load_project(PROJECT_ROOT, "").feature_repos["payments"].generator
        assert generator is not None
        return validate_settings(
            n_customers=None, n_merchants=None, drift_strength=1.0, **generator.params
        )

    monkeypatch.delenv(DRIFT_START_ENV, raising=False)
    assert generator_settings().drift_start_us is None
    monkeypatch.setenv(DRIFT_START_ENV, DEMO_DRIFT_START)
    drift_start = pd.Timestamp(DEMO_DRIFT_START, tz="UTC").value // 1000
    assert generator_settings().drift_start_us == drift_start
