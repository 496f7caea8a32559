"""Schedules from the specs: retraining, drift monitoring and batch scoring, on their cron.

- ``retraining.schedule``: the training job (features to champion).
- ``monitoring.schedule``: the monitoring job (``predictions`` + ``drift_report``: the newest
  window scored and compared with the champion's training reference).
- ``scoring.schedule``: the scoring job (``predictions`` only).

Each runs the same job the UI launches, and is running by default: a schedule in a spec is on.
"""

from __future__ import annotations

import dagster as dg

from assets.keys import (
    MODEL_TAG,
    monitoring_job_name,
    monitoring_schedule_name,
    retraining_schedule_name,
    scoring_job_name,
    scoring_schedule_name,
    training_job_name,
)
from ml_platform.spec.catalog import Catalog


def _schedule(
    name: str, job_name: str, cron: str, timezone: str, model: str, description: str
) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name,
        job_name=job_name,
        cron_schedule=cron,
        execution_timezone=timezone,
        description=description,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags={MODEL_TAG: model},
    )


def build_schedules(catalog: Catalog) -> list[dg.ScheduleDefinition]:
    """The retraining, monitoring and scoring schedules the specs declare.

    Args:
        catalog: the loaded specs.

    Returns:
        Per model, a schedule for each of ``retraining.schedule``, ``monitoring.schedule`` and
        ``scoring.schedule`` that is set, running by default, in that section's ``timezone``.
    """
    schedules = []
    for name, spec in catalog.models.items():
        if spec.retraining.schedule:
            schedules.append(
                _schedule(
                    retraining_schedule_name(name),
                    training_job_name(name),
                    spec.retraining.schedule,
                    spec.retraining.timezone,
                    name,
                    f"Retrain {name} on its cadence ({spec.retraining.schedule}).",
                )
            )
        if spec.monitoring.schedule:
            schedules.append(
                _schedule(
                    monitoring_schedule_name(name),
                    monitoring_job_name(name),
                    spec.monitoring.schedule,
                    spec.monitoring.timezone,
                    name,
                    f"Score the newest data with the {name} champion and report its drift "
                    f"({spec.monitoring.schedule}).",
                )
            )
        if spec.scoring.schedule:
            schedules.append(
                _schedule(
                    scoring_schedule_name(name),
                    scoring_job_name(name),
                    spec.scoring.schedule,
                    spec.scoring.timezone,
                    name,
                    f"Score the newest data with the {name} champion ({spec.scoring.schedule}).",
                )
            )
    return schedules
