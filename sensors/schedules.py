"""Retraining schedules: the training job on the cadence a spec's ``retraining.schedule`` sets."""

from __future__ import annotations

import dagster as dg

from assets.keys import MODEL_TAG, retraining_schedule_name, training_job_name
from ml_platform.spec.catalog import Catalog


def build_schedules(catalog: Catalog) -> list[dg.ScheduleDefinition]:
    """A retraining schedule per model whose spec sets ``retraining.schedule``.

    Args:
        catalog: the loaded specs.

    Returns:
        The schedules, running by default, in the spec's ``retraining.timezone``.
    """
    return [
        dg.ScheduleDefinition(
            name=retraining_schedule_name(name),
            job_name=training_job_name(name),
            cron_schedule=spec.retraining.schedule,
            execution_timezone=spec.retraining.timezone,
            description=f"Retrain {name} on its cadence ({spec.retraining.schedule}).",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags={MODEL_TAG: name},
        )
        for name, spec in catalog.models.items()
        if spec.retraining.schedule
    ]
