"""Canary sensors: promote or roll back a running canary from its live figures, exactly once.

Every 30 seconds the sensor of a model reads, from the audit log, whether a canary runs
(``lifecycle.deploy.running_canary``) and counts its calls and 5xx errors with one aggregate
query over the call trail. Below ``serving.canary.min_calls`` calls (and within
``max_duration``) it skips, showing the counts. Otherwise it measures the canary against the
champion (latency, score distribution, performance on labelled calls) and decides by the spec's
bounds (``decide_canary``): a wait is a skip that shows the figures and reasons; a promotion or
a rollback requests one run materializing ``<model>/deployment`` with action ``decide``, run key
``<version>:<start>:<action>``, so a decision launches once even when ticks race, and a
version canaried again later is judged again. The run measures again and carries the decision
out; its metadata shows the figures and the reasons.

The sensor runs by default: a tick without a canary is one audit query, and MLflow is never
imported by it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from assets.deployment import deployment_run_config
from assets.jobs import sensor_target
from assets.keys import (
    CANARY_DECISION_TAG,
    DEPLOYMENT_ASSET,
    MODEL_TAG,
    canary_sensor_name,
    model_key,
    start_canary_job_name,
)
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.model import ModelSpec
from ml_platform.spec.values import parse_duration
from resources import AuditLogResource, StorageResource

CANARY_INTERVAL_SECONDS = 30


def canary_run_key(version: str, since: str, action: str) -> str:
    """The run key of a canary decision: ``<version>:<start, to the second>:<action>``."""
    start = datetime.fromisoformat(since).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{version}:{start}:{action}"


def build_canary_sensor(spec: ModelSpec, catalog: Catalog) -> dg.SensorDefinition:
    """The sensor ``canary_<model>``.

    Args:
        spec: the model's spec (``serving.canary``).
        catalog: the loaded specs (the label source, for performance on labelled calls).

    Returns:
        The sensor, running by default, targeting ``<model>/deployment``.
    """
    name = spec.name
    key = model_key(name, DEPLOYMENT_ASSET)
    policy = spec.serving.canary

    @dg.sensor(
        name=canary_sensor_name(name),
        target=sensor_target(canary_sensor_name(name), [key]),
        minimum_interval_seconds=CANARY_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Promotes or rolls back a running canary of {name} from its live calls "
        "(error rate, latency, prediction shift, performance) by spec serving.canary.",
        tags={MODEL_TAG: name},
    )
    def canary(
        context: dg.SensorEvaluationContext, storage: StorageResource, audit: AuditLogResource
    ) -> dg.RunRequest | dg.SkipReason:
        from ml_platform.lifecycle.canary import call_counts, decide_canary, measure_canary
        from ml_platform.lifecycle.deploy import running_canary
        from ml_platform.lifecycle.records import StepContext
        from ml_platform.registry.client import ModelRegistry

        log = audit.audit_log()
        run = running_canary(log, name)
        if run is None:
            return dg.SkipReason(
                f"no canary of {name} runs; start one with the job '{start_canary_job_name(name)}'"
            )
        now = datetime.now(UTC)
        counts = call_counts(log.url, name, run, now)
        calls, errors = counts["canary"]
        champion_calls, _ = counts["champion"]
        running = now - run.started_at
        if calls < policy.min_calls and running < parse_duration(policy.max_duration):
            return dg.SkipReason(
                f"waiting: canary v{run.version} at {run.share:.0%} since {run.since}: {calls} "
                f"of {policy.min_calls} calls needed ({errors} answered 5xx); champion "
                f"v{run.champion}: {champion_calls} calls"
            )
        settings = storage.settings()
        step = StepContext(
            settings=settings,
            registry=ModelRegistry.for_settings(settings),  # not called: MLflow stays unloaded
            audit=log,
            log=context.log.info,
        )
        figures = measure_canary(spec, step, run, catalog=catalog, now=now)
        decision = decide_canary(spec, figures, now)
        if decision.action == "wait":
            return dg.SkipReason(
                f"waiting: canary v{run.version} since {run.since}: " + "; ".join(decision.reasons)
            )
        run_key = canary_run_key(run.version, run.since, decision.action)
        requested = context.instance.get_runs(
            filters=dg.RunsFilter(tags={CANARY_DECISION_TAG: run_key}), limit=1
        )
        if requested:
            return dg.SkipReason(
                f"{decision.action} of canary v{run.version} already requested: run "
                f"{requested[0].run_id} ({requested[0].status.value})"
            )
        context.log.info(f"{decision.action} canary v{run.version}: {'; '.join(decision.reasons)}")
        return dg.RunRequest(
            run_key=run_key,
            asset_selection=[key],
            run_config=deployment_run_config(name, "decide"),
            tags={MODEL_TAG: name, CANARY_DECISION_TAG: run_key},
        )

    return canary


def build_canary_sensors(catalog: Catalog) -> list[dg.SensorDefinition]:
    """A canary sensor per model of the catalog."""
    return [build_canary_sensor(spec, catalog) for spec in catalog.models.values()]
