"""Per model, the jobs that schedules, sensors and people launch: training, scoring, monitoring.

Selections are explicit key lists, so a job shows what it runs: training builds the model's
generated sources and feature views, then training set, model, evaluation and champion; scoring
builds predictions only; monitoring builds predictions and the drift report. Monitoring scores
before it reports because a drift report judges the newest scored window: run alone on an old
window it would report the same drift event again.

Every per-model job is a ``ScopedAssetJob``: Dagster resolves an asset job against the whole
graph, scanning every assets definition for each job, so a hundred models' five hundred jobs
cost the square of the models. A scoped job is resolved against the small graph it touches
(its assets, their checks and direct upstreams), which gives the same job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.target import ANONYMOUS_ASSET_JOB_PREFIX
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster_shared.record import as_dict

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
    from collections.abc import Mapping

    from dagster import AssetsDefinition, ExecutorDefinition, JobDefinition, ResourceDefinition
    from dagster._core.definitions.asset_selection import CoercibleToAssetSelection


def job_scope(asset_graph: AssetGraph, selection: dg.AssetSelection) -> AssetGraph:
    """The part of ``asset_graph`` that resolving an asset job of ``selection`` reads.

    That is the assets definitions of the selected keys, of the checks on them, and of every
    key those definitions read or write (upstreams become unexecutable in the job, as Dagster
    makes them from the whole graph).

    Args:
        asset_graph: the code location's whole asset graph.
        selection: the job's selection.

    Returns:
        A graph of those definitions alone.
    """
    keys = selection.resolve(asset_graph)
    scope: dict[int, AssetsDefinition] = {}
    for key in keys:
        assets_def = asset_graph.assets_def_for_key(key)
        scope[id(assets_def)] = assets_def
        for check_key in asset_graph.get(key).check_keys:
            checks_def = asset_graph.assets_def_for_key(check_key)
            scope[id(checks_def)] = checks_def
    for assets_def in list(scope.values()):
        for key in (
            *assets_def.node_keys_by_input_name.values(),
            *assets_def.node_keys_by_output_name.values(),
        ):
            if asset_graph.has(key):
                other = asset_graph.assets_def_for_key(key)
                scope[id(other)] = other
    return AssetGraph.from_assets(list(scope.values()))


class ScopedAssetJob(UnresolvedAssetJobDefinition):
    """An asset job that Dagster resolves against ``job_scope`` instead of the whole graph.

    The job is the same (``tests/unit/test_many_models.py`` compares every job's snapshot and
    asset layer with Dagster's own resolution); within the job, a run of a subset of its assets
    resolves against the scope too, which holds every asset the job can run.
    """

    def resolve(
        self,
        asset_graph: AssetGraph,
        default_executor_def: ExecutorDefinition | None = None,
        resource_defs: Mapping[str, ResourceDefinition] | None = None,
    ) -> JobDefinition:
        """Resolve the job against the part of ``asset_graph`` it touches."""
        return super().resolve(
            job_scope(asset_graph, self.selection), default_executor_def, resource_defs
        )


def scoped_asset_job(
    name: str, selection: CoercibleToAssetSelection, **kwargs: Any
) -> ScopedAssetJob:
    """``dg.define_asset_job`` (same arguments and checks) as a ``ScopedAssetJob``."""
    return ScopedAssetJob(**as_dict(dg.define_asset_job(name, selection=selection, **kwargs)))


def sensor_target(sensor_name: str, selection: CoercibleToAssetSelection) -> ScopedAssetJob:
    """A sensor's ``target`` for an asset selection: the job Dagster would make, but scoped.

    Dagster turns ``target=<selection>`` into a hidden job named after the sensor and resolves
    it against the whole graph; this is that job (same name, hidden alike) as a
    ``ScopedAssetJob``.
    """
    return scoped_asset_job(f"{ANONYMOUS_ASSET_JOB_PREFIX}_{sensor_name}", selection)


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


def build_jobs(catalog: Catalog) -> list[ScopedAssetJob]:
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
            scoped_asset_job(
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
            scoped_asset_job(
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
            scoped_asset_job(
                monitoring_job_name(name),
                selection=monitoring,
                description=f"{what} with the champion's training reference (drift report).",
                tags={MODEL_TAG: name},
            )
        )
    return jobs
