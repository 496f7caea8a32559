"""`ml-platform demo`: the whole example on embedded defaults, and its summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_platform.cli.main import main

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_promotes_a_champion_and_prints_metrics_and_gates(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("ML_PLATFORM_DEMO_ROWS", "")  # demo sets it; restored after the test
    assert main(["demo", "--rows", "20000"]) == 0
    output = capsys.readouterr().out
    assert "fraud_detection: champion version 1" in output
    assert "test roc_auc" in output
    assert "data_quality (training set)  passed" in output
    assert "no_regression_vs_champion    passed" in output
    assert "fraud_detection__model" in output  # the per-asset timings
    assert "peak memory: " in output


@pytest.mark.slow
def test_demo_on_too_little_data_stops_at_the_data_gate(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("ML_PLATFORM_DEMO_ROWS", "")  # demo sets it; restored after the test
    assert main(["demo", "--rows", "5000"]) == 1
    output = capsys.readouterr().out
    assert "expect_table_row_count_to_be_between(min_value=10000)" in output
    assert "fraud_detection: not promoted" in output
