"""What Dagster alone costs to load a code location shaped like N models of ml_platform.

The floor against which ``bench/load_time.py --floor`` reads the platform's load: bare Dagster
definitions with no-op bodies, built with the public API in the cheapest way it offers, in the
numbers the platform defines per model (``tests/unit/test_many_models.py`` counts them):

- ``assets``: per model a chain of 7 assets (training set, model, evaluation, champion,
  predictions, drift report, deployment) from one shared upstream asset, with the platform's 6
  blocking checks as check specs of the assets they judge.
- ``all``: the same, plus per model 5 asset jobs (training, scoring, monitoring, start canary,
  a sensor's target), an op job (override), 2 schedules and 3 sensors.

It is loaded as ``bench/load_time.py`` loads the platform: definitions, repository, every job
resolved, the asset graph, with the collector's generations frozen around the build as the
platform's ``defs()`` does. No spec is read and no platform module is imported.

Usage: .venv/bin/python bench/dagster_floor.py --models 100 --what all
"""

from __future__ import annotations

import argparse
import gc

import dagster as dg
from dagster import SensorEvaluationContext

CHAIN = ("training_set", "model", "evaluation", "champion", "predictions", "drift_report")
DEPLOYMENT = "deployment"
CHECKS = {
    "training_set": ("data_quality",),
    "model": ("latency_within_bound",),
    "evaluation": (
        "metrics_meet_thresholds",
        "slices_meet_thresholds",
        "no_regression_vs_champion",
    ),
    "drift_report": ("no_significant_drift",),
}
UPSTREAM = dg.AssetKey(["features", "upstream"])


def _noop(context):  # unannotated: Dagster reads annotations, and these would mislead it
    """Every asset's body: the floor measures definitions, not work."""


def model_assets(model: str) -> list[dg.AssetsDefinition]:
    """One model's 7 assets and their 6 check specs."""
    assets = []
    upstream = UPSTREAM
    for name in (*CHAIN, DEPLOYMENT):
        key = dg.AssetKey([model, name])
        # The deployment hangs off the champion, as the platform's does.
        deps = [dg.AssetKey([model, "champion"])] if name == DEPLOYMENT else [upstream]
        assets.append(
            dg.asset(
                key=key,
                deps=deps,
                group_name=model,
                description=f"{model} {name}",
                check_specs=[
                    dg.AssetCheckSpec(check, asset=key, blocking=True)
                    for check in CHECKS.get(name, ())
                ],
            )(_noop)
        )
        upstream = key
    return assets


def model_automation(
    model: str,
) -> tuple[list[dg.UnresolvedAssetJobDefinition | dg.JobDefinition], list, list]:
    """One model's jobs, schedules and sensors, in the platform's numbers."""

    def keys(*names: str) -> dg.AssetSelection:
        return dg.AssetSelection.assets(*(dg.AssetKey([model, name]) for name in names))

    jobs: list[dg.UnresolvedAssetJobDefinition | dg.JobDefinition] = [
        dg.define_asset_job(f"{model}_training", selection=keys(*CHAIN[:4])),
        dg.define_asset_job(f"{model}_scoring", selection=keys("predictions")),
        dg.define_asset_job(f"{model}_monitoring", selection=keys("predictions", "drift_report")),
        dg.define_asset_job(f"start_canary_{model}", selection=keys(DEPLOYMENT)),
    ]

    @dg.op(name=f"{model}_override_champion")
    def override() -> None:
        """The override job's one op."""

    @dg.job(name=f"{model}_promote_override")
    def override_job() -> None:
        override()

    jobs.append(override_job)
    schedules = [
        dg.ScheduleDefinition(
            name=f"{model}_{job}_schedule", job_name=f"{model}_{job}", cron_schedule="0 3 * * *"
        )
        for job in ("training", "monitoring")
    ]

    def tick(context: SensorEvaluationContext) -> dg.SkipReason:
        return dg.SkipReason("floor")

    sensors = [
        dg.sensor(name=f"{model}_new_labels", job_name=f"{model}_training")(tick),
        dg.sensor(name=f"{model}_drift", job_name=f"{model}_training")(tick),
        dg.sensor(name=f"canary_{model}", target=keys(DEPLOYMENT))(tick),
    ]
    return jobs, schedules, sensors


def build(models: int, what: str) -> dg.Definitions:
    """The floor's definitions for ``models`` models; ``what`` is ``assets`` or ``all``."""

    @dg.asset(key=UPSTREAM)
    def upstream() -> None:
        """The shared upstream (the platform's feature views and sources)."""

    assets: list[dg.AssetsDefinition] = [upstream]
    jobs: list = []
    schedules: list = []
    sensors: list = []
    for index in range(models):
        model = f"model_{index:03d}"
        assets += model_assets(model)
        if what == "all":
            more_jobs, more_schedules, more_sensors = model_automation(model)
            jobs += more_jobs
            schedules += more_schedules
            sensors += more_sensors
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--what", choices=("assets", "all"), default="all")
    args = parser.parse_args()
    gc.freeze()
    definitions = build(args.models, args.what)
    gc.freeze()
    repo = definitions.get_repository_def()
    repo.get_all_jobs()
    repo.asset_graph  # noqa: B018 - building it is the point


if __name__ == "__main__":
    main()
