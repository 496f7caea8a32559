"""The model spec's ``monitoring`` section and ``scoring.schedule``: defaults and precise errors."""

from __future__ import annotations

import shutil
import typing
from pathlib import Path

import pytest
import yaml

from ml_platform.monitoring.statistical_tests import TESTS
from ml_platform.spec.loading import load_catalog
from ml_platform.spec.model import DriftTest, MonitoringSpec, RetrainOnSpec, ScoringSpec
from tests.unit.spec_examples import EXAMPLE, MINIMAL_MODEL

MODEL = MINIMAL_MODEL


def load_model(tmp_path: Path, **changes: object):
    shutil.copy(EXAMPLE / "features.yaml", tmp_path / "features.yaml")
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({**MODEL, **changes}, sort_keys=False))
    return load_catalog(sorted(tmp_path.glob("*.yaml")))


def test_defaults_report_drift_and_never_retrain(tmp_path: Path) -> None:
    catalog = load_model(tmp_path)
    assert not catalog.errors
    spec = catalog.models["churn"]
    monitoring = spec.monitoring
    assert monitoring.schedule is None and monitoring.window is None
    assert monitoring.min_rows == 100 and monitoring.drift_share == 0.5
    assert monitoring.columns == {} and monitoring.retrain_on is None
    assert monitoring.cooldown == "24h"
    assert not monitoring.sensor_running
    assert spec.scoring.schedule is None


def test_a_full_section_loads(tmp_path: Path) -> None:
    catalog = load_model(
        tmp_path,
        scoring={"window": "14d", "schedule": "0 * * * *"},
        monitoring={
            "schedule": "30 6 * * *",
            "window": "3d",
            "min_rows": 500,
            "drift_share": 0.3,
            "columns": {
                "amount": {"test": "psi", "threshold": 0.2},
                "prediction": {"threshold": 0.05},
            },
            "retrain_on": {"drift_share": 0.5, "prediction_drift": True, "performance_drop": 0.02},
            "cooldown": "12h",
        },
    )
    assert not catalog.errors, catalog.errors
    spec = catalog.models["churn"]
    assert spec.scoring.schedule == "0 * * * *"
    monitoring = spec.monitoring
    assert monitoring.columns["amount"].test == "psi"
    assert monitoring.columns["prediction"].test is None
    assert monitoring.retrain_on == RetrainOnSpec(
        drift_share=0.5, prediction_drift=True, performance_drop=0.02
    )
    assert monitoring.sensor_running


@pytest.mark.parametrize(
    ("sensor", "retrain_on", "running"),
    [
        (None, None, False),
        (None, {"prediction_drift": True}, True),
        ("stopped", {"prediction_drift": True}, False),
        ("running", None, True),
    ],
)
def test_the_sensor_runs_when_drift_may_retrain_unless_the_spec_says(
    sensor: str | None, retrain_on: dict | None, running: bool
) -> None:
    spec = MonitoringSpec.model_validate({"sensor": sensor, "retrain_on": retrain_on})
    assert spec.sensor_running is running


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"monitoring": {"schedule": "daily"}},
            "monitoring.schedule: not a 5-field cron expression",
        ),
        ({"scoring": {"schedule": "hourly"}}, "scoring.schedule: not a 5-field cron expression"),
        ({"monitoring": {"window": "3 days"}}, "monitoring.window: not a duration"),
        ({"monitoring": {"cooldown": "soon"}}, "monitoring.cooldown: not a duration"),
        ({"monitoring": {"min_rows": 0}}, "monitoring.min_rows: Input should be greater than"),
        ({"monitoring": {"drift_share": 1.5}}, "monitoring.drift_share: Input should be less"),
        (
            {"monitoring": {"columns": {"amount": {"test": "kolmogorov"}}}},
            "monitoring.columns.amount.test: Input should be 'wasserstein', 'ks'",
        ),
        (
            {"monitoring": {"columns": {"amount": {"threshold": 0}}}},
            "monitoring.columns.amount.threshold: Input should be greater than 0",
        ),
        ({"monitoring": {"retrain_on": {}}}, "retrain_on names no trigger"),
        (
            {"monitoring": {"retrain_on": {"drift_shar": 0.5}}},
            "unknown key 'drift_shar' (did you mean 'drift_share'?)",
        ),
        ({"monitoring": {"sensor": "on"}}, "monitoring.sensor: Input should be 'running'"),
    ],
)
def test_invalid_monitoring_section_names_file_field_and_fix(
    tmp_path: Path, change: dict, expected: str
) -> None:
    catalog = load_model(tmp_path, **change)
    assert len(catalog.errors) == 1, catalog.errors
    message = str(catalog.errors[0])
    assert str(tmp_path / "model.yaml") in message
    assert expected in message


def test_spec_drift_tests_are_the_monitoring_library_tests() -> None:
    assert set(typing.get_args(DriftTest)) == set(TESTS)


def test_scoring_schedule_defaults_to_none() -> None:
    assert ScoringSpec().schedule is None and ScoringSpec().timezone == "UTC"
