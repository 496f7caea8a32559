"""Per model, the jobs that schedules, sensors and people launch: training, scoring, monitoring.

Selections are explicit key lists, so a job shows what it runs: training builds the model's
generated sources and feature views, then training set, model, evaluation and champion; scoring
builds predictions only; monitoring builds predictions and the drift report. Monitoring scores
before it reports because a drift report judges the newest scored window: run alone on an old
window it would report the same drift event again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.keys import (
    MODEL_TAG,
    TRAINING_ASSETS,
    TRAINING_TAG,
    feature_key,
    model_key,
    monitoring_job_name,
    scoring_job_name,
    source_key,
    training_job_name,
)
from ml_platform.compute.kubernetes import run_tags
from ml_platform.compute.profiles import load_profiles
from ml_platform.spec.catalog import Catalog

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )


def training_selection(catalog: Catalog, model: str) -> dg.AssetSelection:
    """Everything a training run of ``model`` builds, upstream first.

    Args:
        catalog: the loaded specs.
        model: the model's name.

    Returns:
        The label source and the sources of the model's feature views (those a generator
        writes, with the other sources it writes in the same step: nothing materializes an
        external source), the feature views, and the model's
        ``TRAINING_ASSETS``.
    """
    views = list(catalog.resolved[model].feature_views)
    all_views = catalog.feature_views()
    sources = {catalog.models[model].label.source, *(all_views[v][1].source for v in views)}
    # A generator writes every source of its repo in one step, which Dagster cannot subset.
    repos = {catalog.repo_of_source(s).name: catalog.repo_of_source(s) for s in sources}
    generated = sorted(
        s.name for repo in repos.values() if repo.generator is not None for s in repo.sources
    )
    return dg.AssetSelection.assets(
        *(source_key(source) for source in generated),
        *(feature_key(view) for view in views),
        *(model_key(model, asset) for asset in TRAINING_ASSETS),
    )


def build_jobs(catalog: Catalog) -> list[UnresolvedAssetJobDefinition]:
    """Per model: training (sources to champion), scoring (predictions), monitoring jobs.

    Args:
        catalog: the loaded specs; each model's compute profile sets its training run's tags
            (maximum runtime).

    Returns:
        The jobs, named by ``training_job_name``, ``scoring_job_name`` and
        ``monitoring_job_name``.
    """
    jobs = []
    profiles = load_profiles()
    for name, spec in catalog.models.items():
        jobs.append(
            dg.define_asset_job(
                training_job_name(name),
                selection=training_selection(catalog, name),
                description=f"Build features and the training set, train, evaluate and promote "
                f"{name}.",
                tags={
                    MODEL_TAG: name,
                    TRAINING_TAG: name,
                    **run_tags(profiles[spec.compute.profile]),
                },
            )
        )
        jobs.append(
            dg.define_asset_job(
                scoring_job_name(name),
                selection=dg.AssetSelection.assets(model_key(name, "predictions")),
                description=f"Score the newest data with the {name} champion.",
                tags={MODEL_TAG: name},
            )
        )
        if spec.monitoring.source == "calls":
            monitoring = dg.AssetSelection.assets(model_key(name, "drift_report"))
            what = f"Compare the {name} prediction service's recent calls"
        else:
            monitoring = dg.AssetSelection.assets(
                model_key(name, "predictions"), model_key(name, "drift_report")
            )
            what = f"Score the newest data with the {name} champion and compare it"
        jobs.append(
            dg.define_asset_job(
                monitoring_job_name(name),
                selection=monitoring,
                description=f"{what} with the champion's training reference (drift report).",
                tags={MODEL_TAG: name},
            )
        )
    return jobs
