"""The one Dagster entry point: every definition is built here from the specs.

``workspace.yaml`` and ``dagster_cloud.yaml`` load this module. Loading reads the YAML specs and
builds the graph; it imports none of torch, xgboost, feast, great_expectations, evidently or
mlflow. The pieces come from ``assets/`` (assets and jobs), ``sensors/`` (schedules and sensors)
and ``resources/`` (per deployment), imported when the definitions are built (``defs``).
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import dagster as dg

from ml_platform.core.settings import deployment

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STRICT_ENV = "ML_PLATFORM_STRICT"
EXECUTOR_ENV = "ML_PLATFORM_EXECUTOR"
logger = logging.getLogger("ml_platform")


def executor() -> dg.ExecutorDefinition:
    """The run executor of the current deployment.

    Returns:
        ``k8s_job_executor`` on Kubernetes (a pod per step); locally in-process, or multiprocess
        when ``ML_PLATFORM_EXECUTOR=multiprocess``.
    """
    if deployment() == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    # In-process by default: each step of a multiprocess run pays the ML libraries' import time
    # again (about 20 s here); ML_PLATFORM_EXECUTOR=multiprocess runs independent steps in parallel.
    if os.environ.get(EXECUTOR_ENV, "in_process") == "multiprocess":
        return dg.multiprocess_executor
    return dg.in_process_executor


def build_definitions(
    project_root: Path = PROJECT_ROOT, spec_path: str | None = None
) -> dg.Definitions:
    """Build the Definitions from the specs under ``project_root`` and ``ML_PLATFORM_SPEC_PATH``.

    Args:
        project_root: the directory whose ``assets/**/*.yaml`` specs are loaded.
        spec_path: extra spec directories (``os.pathsep``-separated); ``None`` reads
            ``ML_PLATFORM_SPEC_PATH``, ``""`` adds none.

    Returns:
        Every asset, job, schedule, sensor, resource and the executor. A spec file that fails
        to load becomes a placeholder asset showing its errors.

    Raises:
        DagsterInvalidDefinitionError: a spec file is invalid and ``ML_PLATFORM_STRICT=1``.
    """
    from assets.deployment import build_deployment_assets, build_start_canary_jobs
    from assets.feature_views import build_feature_views, build_freshness_checks
    from assets.invalid_specs import build_invalid_spec_assets
    from assets.jobs import build_jobs
    from assets.models import build_model_assets
    from assets.promotion import build_override_jobs
    from assets.sources import build_sources
    from ml_platform.spec.loading import load_project
    from resources import resources_for_deployment
    from sensors.alerts import failure_alerts
    from sensors.automation import build_automation_sensors
    from sensors.canary import build_canary_sensors
    from sensors.champion import build_champion_sensor
    from sensors.drift import build_drift_sensors
    from sensors.new_data import build_new_data_sensors
    from sensors.schedules import build_schedules

    catalog = load_project(project_root, spec_path)
    for error in catalog.errors:
        logger.error("%s", error)
    if catalog.errors and os.environ.get(STRICT_ENV) == "1":
        raise dg.DagsterInvalidDefinitionError("\n".join(str(e) for e in catalog.errors))
    return dg.Definitions(
        assets=[
            *build_sources(catalog),
            *build_feature_views(catalog),
            *build_model_assets(catalog),
            *build_deployment_assets(catalog),
            *build_invalid_spec_assets(catalog),
        ],
        asset_checks=build_freshness_checks(catalog),
        jobs=[
            *build_jobs(catalog),
            *build_override_jobs(catalog),
            *build_start_canary_jobs(catalog),
        ],
        schedules=build_schedules(catalog),
        sensors=[
            *build_new_data_sensors(catalog),
            *build_drift_sensors(catalog),
            failure_alerts,
            build_champion_sensor(catalog),
            *build_automation_sensors(catalog),
            *build_canary_sensors(catalog),
        ],
        resources=resources_for_deployment(),
        executor=executor(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location's definitions, built from the project's specs.

    Dagster calls this once per process (code server, run worker, step). Before the platform's
    modules are imported and the definitions built, and again after, every object the process
    holds moves to the collector's permanent generation (``gc.freeze``): Dagster's import alone
    leaves over 100,000 objects that live as long as the process, and each full collection
    while the platform loaded scanned them all again (60 ms each here; ``bench/RESULTS.md``).
    Later garbage is collected as before.
    """
    gc.freeze()
    definitions = build_definitions()
    gc.freeze()
    return definitions
