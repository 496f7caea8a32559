"""Schedules from the specs: monitoring and scoring on their cron, running the UI's jobs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ml_platform.definitions import build_definitions
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = loans.MODEL


def test_monitoring_and_scoring_schedules_run_their_jobs(
    platform_home: Path, tmp_path: Path
) -> None:
    spec_dir = loans.write_specs(
        tmp_path / "specs",
        monitoring={"schedule": "0 6 * * *", "timezone": "Africa/Lagos"},
        scoring={"schedule": "30 * * * *"},
    )
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    monitoring = defs.resolve_schedule_def(f"{MODEL}_monitoring_schedule")
    assert (monitoring.job_name, monitoring.cron_schedule) == (f"{MODEL}_monitoring", "0 6 * * *")
    assert monitoring.execution_timezone == "Africa/Lagos"
    assert monitoring.default_status == dg.DefaultScheduleStatus.RUNNING
    scoring = defs.resolve_schedule_def(f"{MODEL}_scoring_schedule")
    assert (scoring.job_name, scoring.cron_schedule) == (f"{MODEL}_scoring", "30 * * * *")
    assert scoring.execution_timezone == "UTC"

    # The monitoring job scores the newest data, then reports its drift.
    job = defs.resolve_job_def(f"{MODEL}_monitoring")
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        f"{MODEL}/predictions",
        f"{MODEL}/drift_report",
    }


def test_no_schedule_without_a_cron_in_the_spec(platform_home: Path, tmp_path: Path) -> None:
    spec_dir = loans.write_specs(tmp_path / "specs")
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    names = {schedule.name for schedule in defs.schedules or []}
    assert f"{MODEL}_retraining_schedule" in names
    assert not names & {f"{MODEL}_monitoring_schedule", f"{MODEL}_scoring_schedule"}
    assert defs.resolve_job_def(f"{MODEL}_monitoring") is not None  # the UI still launches it
