"""The one Dagster entry point: every definition is built here from the specs.

``workspace.yaml`` and ``dagster_cloud.yaml`` load this module. Loading reads the YAML specs and
builds the graph; it imports none of torch, feast, great_expectations, evidently or mlflow.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dagster as dg

from assets.factory import MODEL_ASSETS, build_assets, model_key
from assets.promotion import build_override_jobs
from ml_platform.compute import load_profiles, run_tags
from ml_platform.settings import deployment
from ml_platform.spec import Catalog, load_project
from resources import resources_for_deployment
from sensors import build_schedules, build_sensors, scoring_job_name, training_job_name

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STRICT_ENV = "ML_PLATFORM_STRICT"
logger = logging.getLogger("ml_platform")


def build_jobs(catalog: Catalog) -> list[dg.UnresolvedAssetJobDefinition]:
    """Per model: a training job (sources to champion) and a scoring job (predictions)."""
    jobs = []
    profiles = load_profiles()
    for name, spec in catalog.models.items():
        training_keys = [model_key(name, a) for a in MODEL_ASSETS if a != "predictions"]
        jobs.append(
            dg.define_asset_job(
                training_job_name(name),
                selection=dg.AssetSelection.assets(*training_keys).upstream(),
                description=f"Build features and the training set, train, evaluate and promote "
                f"{name}.",
                tags={"ml_platform/model": name, **run_tags(profiles[spec.compute.profile])},
            )
        )
        jobs.append(
            dg.define_asset_job(
                scoring_job_name(name),
                selection=dg.AssetSelection.assets(model_key(name, "predictions")),
                description=f"Score the newest data with the {name} champion.",
                tags={"ml_platform/model": name},
            )
        )
    return jobs


def _executor() -> dg.ExecutorDefinition:
    if deployment() == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    # In-process by default: each step of a multiprocess run pays the ML libraries' import time
    # again (about 20 s here); ML_PLATFORM_EXECUTOR=multiprocess runs independent steps in parallel.
    if os.environ.get("ML_PLATFORM_EXECUTOR", "in_process") == "multiprocess":
        return dg.multiprocess_executor
    return dg.in_process_executor


def build_definitions(
    project_root: Path = PROJECT_ROOT, spec_path: str | None = None
) -> dg.Definitions:
    """Build the Definitions from the specs under ``project_root`` and ``ML_PLATFORM_SPEC_PATH``."""
    catalog = load_project(project_root, spec_path)
    for error in catalog.errors:
        logger.error("%s", error)
    if catalog.errors and os.environ.get(STRICT_ENV) == "1":
        raise dg.DagsterInvalidDefinitionError("\n".join(str(e) for e in catalog.errors))
    return dg.Definitions(
        assets=build_assets(catalog),
        jobs=[*build_jobs(catalog), *build_override_jobs(catalog)],
        schedules=build_schedules(catalog),
        sensors=build_sensors(catalog),
        resources=resources_for_deployment(),
        executor=_executor(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
