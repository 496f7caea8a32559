"""`ml-platform demo --drift`: drift in the example's new data retrains the model once."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_platform.cli.demo import DRIFT_START_ENV
from ml_platform.cli.main import main

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_drift_demo_reports_drift_and_the_sensor_retrains_once(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("ML_PLATFORM_DEMO_ROWS", "")  # the demo sets both; restored after the test
    monkeypatch.setenv(DRIFT_START_ENV, "")
    assert main(["demo", "--drift", "--rows", "20000"]) == 0
    output = capsys.readouterr().out
    undrifted, drifted = output.split("== 2. New data, drifted from 2026-03-15")
    assert "fraud_detection_drift_sensor: skipped: below threshold" in undrifted
    # The generator's drift: inflated amounts, night payments, new merchants' activity.
    for feature in ("amount", "hour_of_day", "night_txn_share_7d", "txn_amount_mean_7d"):
        assert f"drifted: {feature} " in drifted
    assert "retrain_on fired: drift_share" in drifted
    assert "fraud_detection_drift_sensor: RunRequest fraud_detection-drift-" in drifted
    assert "no_regression_vs_champion" in drifted  # the retraining went through the gates
    assert "fraud_detection_drift_sensor: skipped: no new drift report" in drifted
