"""Schedules and sensors built from the specs."""

from __future__ import annotations

import dagster as dg

from ml_platform.spec import Catalog


def training_job_name(model: str) -> str:
    return f"{model}_training"


def scoring_job_name(model: str) -> str:
    return f"{model}_scoring"


def build_schedules(catalog: Catalog) -> list[dg.ScheduleDefinition]:
    """A retraining schedule per model whose spec sets ``retraining.schedule``."""
    return [
        dg.ScheduleDefinition(
            name=f"{name}_retraining_schedule",
            job_name=training_job_name(name),
            cron_schedule=spec.retraining.schedule,
            execution_timezone=spec.retraining.timezone,
            description=f"Retrain {name} on its cadence ({spec.retraining.schedule}).",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
        for name, spec in catalog.models.items()
        if spec.retraining.schedule
    ]
