"""A model's assets: training_set -> model -> evaluation -> champion -> predictions -> drift_report.

One builder per asset. Each body calls one ``ml_platform.lifecycle`` step (imported inside the
body, so that loading the code location stays fast) and returns the metadata that
``assets.metadata`` renders from the step's record. The asset group is the model's name.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster import AssetExecutionContext

from assets.automation import gated_automation
from assets.keys import (
    DATA_GATE,
    DATA_GATE_DESCRIPTION,
    EVALUATION_GATE_DESCRIPTIONS,
    FORCE_RETRAIN_TAG,
    MODEL_TAG,
    NO_SIGNIFICANT_DRIFT,
    NO_SIGNIFICANT_DRIFT_DESCRIPTION,
    TRAINING_TAG,
    feature_key,
    model_key,
    source_key,
)
from assets.metadata import (
    champion_metadata,
    drift_check_result,
    drift_report_metadata,
    evaluation_check_results,
    evaluation_metadata,
    failed_training_set_metadata,
    gate_check_result,
    model_metadata,
    owners,
    predictions_metadata,
    read_column_schema,
    training_set_metadata,
)
from ml_platform.compute.kubernetes import PROFILE_TAG, op_tags, pool, run_tags
from ml_platform.compute.profiles import load_profiles
from ml_platform.core.settings import deployment, retry_delay_seconds
from ml_platform.evaluation.gates import EVALUATION_GATES
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.model import ModelSpec
from resources import LifecycleResource, MlflowTrackingResource

if TYPE_CHECKING:
    from ml_platform.lifecycle.records import ModelRecord, StepContext


@dataclass(frozen=True)
class _Step:
    """Where and how an asset's step runs; the defaults run it anywhere, once."""

    tags: dict[str, str] | None = None
    op_tags: dict[str, Any] | None = None
    pool: str | None = None
    retry_policy: dg.RetryPolicy | None = None


def _training_step(model: ModelSpec) -> _Step:
    """The training step's compute profile: Kubernetes resources, pool, retries."""
    profile = load_profiles()[model.compute.profile]
    return _Step(
        tags={PROFILE_TAG: model.compute.profile},
        # Step-level Kubernetes settings only reach step pods as op tags (dagster-k8s 0.29).
        op_tags=op_tags(profile, deployment()),
        pool=pool(profile),
        # A preempted or evicted step is retried and resumes from its last checkpoint.
        retry_policy=dg.RetryPolicy(max_retries=2, delay=retry_delay_seconds()),
    )


def _model_asset(
    model: ModelSpec,
    asset: str,
    deps: Sequence[dg.AssetKey],
    kinds: set[str],
    checks: Mapping[str, str] | None = None,
    blocking: bool = True,
    step: _Step | None = None,
) -> Callable[[Callable[..., dg.MaterializeResult]], dg.AssetsDefinition]:
    """The decorator of one of a model's assets: its key, group, owners, description, automation.

    The asset's description is its function's docstring followed by the spec's ``description``
    of the model; its owner is the spec's ``owner`` (an email, else a team).

    Args:
        model: the model's spec; its name is the asset group.
        asset: one of ``MODEL_ASSETS``.
        deps: the upstream asset keys.
        kinds: the kinds the catalog shows.
        checks: the asset's checks, name to description.
        blocking: whether the checks block what is downstream (gates) or only warn (drift).
        step: how the asset's step runs (compute profile), for the training step.

    Returns:
        A decorator applying ``dg.asset`` with those arguments.
    """
    step = step or _Step()
    key = model_key(model.name, asset)
    check_specs = [
        dg.AssetCheckSpec(name, asset=key, blocking=blocking, description=description)
        for name, description in (checks or {}).items()
    ]

    def decorate(body: Callable[..., dg.MaterializeResult]) -> dg.AssetsDefinition:
        summary = " ".join((body.__doc__ or "").split())
        # The description is passed explicitly. Left in place, the one-line docstring would be
        # parsed again for argument and return descriptions (it has none): an eighth of the
        # time a model's asset took to build.
        body.__doc__ = None
        about = f"Model '{model.name}': {model.description.strip()}" if model.description else ""
        return dg.asset(
            key=key,
            deps=deps,
            group_name=model.name,
            description="\n\n".join(part for part in (summary, about) if part) or None,
            owners=owners(model.owner),
            kinds=kinds,
            check_specs=check_specs,
            automation_condition=gated_automation() if model.retraining.automation else None,
            tags=step.tags,
            op_tags=step.op_tags,
            pool=step.pool,
            retry_policy=step.retry_policy,
        )(body)

    return decorate


@contextmanager
def _data_gate_fails_the_step() -> Iterator[None]:
    """A failed data gate fails the step for good: retrying cannot fix the data."""
    from ml_platform.datasets.training_set import DataGateFailed

    try:
        yield
    except DataGateFailed as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


@contextmanager
def _training_refusals_fail_the_step(model: str) -> Iterator[None]:
    """Another live training of the model, or a spent time budget, fails the step for good."""
    from ml_platform.core.leases import LeaseHeld
    from ml_platform.training.budget import TrainingBudgetExceeded

    try:
        yield
    except LeaseHeld as error:
        holder, since = error.lease.holder, error.lease.acquired_at.isoformat(timespec="seconds")
        raise dg.Failure(
            description=f"model {model} is being trained by run {holder} since {since}; this "
            "run trains nothing (one training run per model at a time: launch it again once "
            "that run has finished)",
            allow_retries=False,
        ) from None
    except TrainingBudgetExceeded as error:
        raise dg.Failure(description=f"model {model}: {error}", allow_retries=False) from None


def _tag_the_run(context: AssetExecutionContext, tags: Mapping[str, str]) -> None:
    """Add the training run tags its launch did not set (a UI selection, automation).

    Run monitoring reads ``dagster/max_runtime`` from the run's stored tags on every check, so
    the limit applies from here on; the training job sets them all when the run is queued.
    """
    missing = {key: value for key, value in tags.items() if key not in context.run.tags}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)
        context.log.info(f"run tagged as a training run: {missing}")


def _run_is_alive(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    """Whether a Dagster run still runs: known to the instance and not finished."""

    def is_alive(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    return is_alive


def build_training_set_asset(model: ModelSpec, catalog: Catalog) -> dg.AssetsDefinition:
    """``<model>/training_set``: labels joined with features point-in-time, gated, split by time.

    Args:
        model: the model's spec.
        catalog: the loaded specs (the model's resolved features and their repositories).

    Returns:
        The asset, with its blocking data gate; it depends on the label source and the views.
    """
    resolved = catalog.resolved[model.name]

    @_model_asset(
        model,
        "training_set",
        deps=[source_key(model.label.source), *map(feature_key, resolved.feature_views)],
        kinds={"parquet", "feast"},
        checks={DATA_GATE: DATA_GATE_DESCRIPTION},
    )
    def training_set(
        context: AssetExecutionContext, lifecycle: LifecycleResource
    ) -> dg.MaterializeResult:
        """Labels joined point-in-time with Feast features, gated, split by time."""
        from ml_platform.datasets.training_set import build_training_set

        settings = lifecycle.feature_store.settings(lifecycle.storage)
        with _data_gate_fails_the_step():
            manifest, report = build_training_set(
                model, resolved, catalog, settings, log=context.log.info
            )
        version = dg.DataVersion(manifest.snapshot_id)
        check = gate_check_result(report)
        if not report.success:
            context.log.error(
                f"training set {manifest.snapshot_id} failed its data gate:\n{report.summary()}"
            )
            metadata = failed_training_set_metadata(manifest)
            return dg.MaterializeResult(
                metadata=metadata, check_results=[check], data_version=version
            )
        context.log.info(f"training set {manifest.snapshot_id}: {manifest.rows}")
        columns = read_column_schema(manifest.split_path("train"))
        metadata = training_set_metadata(manifest, columns)
        return dg.MaterializeResult(metadata=metadata, check_results=[check], data_version=version)

    return training_set


def build_model_asset(model: ModelSpec, catalog: Catalog) -> dg.AssetsDefinition:
    """``<model>/model``: a model trained on the training set, registered as an MLflow version.

    Args:
        model: the model's spec; its compute profile sets the step's Kubernetes resources.
        catalog: the loaded specs.

    Returns:
        The asset; a preempted step is retried and resumes from its last checkpoint. Whatever
        launched its run, the step tags the run as a training run (maximum runtime, model) and
        trains only if no other live run trains the model. A run tagged
        ``ml_platform/force_retrain=true`` trains a new version even when one with the same
        data snapshot, parameters and code version exists.
    """
    resolved = catalog.resolved[model.name]
    training_run_tags = {
        MODEL_TAG: model.name,
        TRAINING_TAG: model.name,
        **run_tags(load_profiles()[model.compute.profile]),
    }

    @_model_asset(
        model,
        "model",
        deps=[model_key(model.name, "training_set")],
        # The flavor's kind gives the catalog its icon: "pytorch" or "xgboost".
        kinds={"pytorch" if model.model.flavor == "torch" else model.model.flavor, "mlflow"},
        step=_training_step(model),
    )
    def trained_model(
        context: AssetExecutionContext, lifecycle: LifecycleResource, mlflow: MlflowTrackingResource
    ) -> dg.MaterializeResult:
        """A model of the spec's flavor trained on the training set, registered in MLflow."""
        from ml_platform.lifecycle.train import train_model

        _tag_the_run(context, training_run_tags)
        step = lifecycle.step(context)
        with _data_gate_fails_the_step(), _training_refusals_fail_the_step(model.name):
            record = train_model(
                model,
                resolved,
                step,
                parent_run_id=mlflow.parent_run_id,
                is_alive=_run_is_alive(context.instance),
                force=context.run.tags.get(FORCE_RETRAIN_TAG, "").lower() == "true",
            )
        _describe_in_mlflow(model, record, step)
        version_url = step.registry.version_url(model.name, record.version)
        return dg.MaterializeResult(metadata=model_metadata(record, version_url, model.description))

    return trained_model


def _describe_in_mlflow(model: ModelSpec, record: "ModelRecord", step: "StepContext") -> None:
    """The spec's description on the registered model and version; the training set as the
    training run's MLflow dataset input, with its source path (both idempotent)."""
    from ml_platform.datasets.training_set import current_training_set

    step.registry.describe(model.name, record.version, model.description)
    manifest = current_training_set(step.settings, model.name)
    if manifest.snapshot_id == record.snapshot_id:
        step.registry.log_training_input(
            record.mlflow_run_id,
            manifest.split_path("train"),
            name=f"{model.name}/training_set",
            digest=manifest.snapshot_id,
        )


def build_evaluation_asset(model: ModelSpec) -> dg.AssetsDefinition:
    """``<model>/evaluation``: test and slice metrics, and the champion's on the same rows.

    Args:
        model: the model's spec.

    Returns:
        The asset, with one blocking check per evaluation gate.
    """

    @_model_asset(
        model,
        "evaluation",
        deps=[model_key(model.name, "model")],
        kinds={"mlflow"},
        checks={gate: EVALUATION_GATE_DESCRIPTIONS[gate] for gate in EVALUATION_GATES},
    )
    def evaluation(
        context: AssetExecutionContext, lifecycle: LifecycleResource
    ) -> dg.MaterializeResult:
        """Test-split metrics, per-slice metrics, and the champion's metrics on the same rows."""
        from ml_platform.lifecycle.evaluate import evaluate_model

        # A champion trained on other features gets them from Feast for the test rows.
        step = lifecycle.step(context)
        report = evaluate_model(model, step)
        links = {
            "mlflow_run": step.registry.training_run_of(model.name, report.version).url,
            "mlflow_model_version": step.registry.version_url(model.name, report.version),
        }
        return dg.MaterializeResult(
            metadata=evaluation_metadata(report, links),
            check_results=evaluation_check_results(report),
        )

    return evaluation


def build_champion_asset(model: ModelSpec) -> dg.AssetsDefinition:
    """``<model>/champion``: the MLflow alias, moved only when every gate passed and it is better.

    Args:
        model: the model's spec.

    Returns:
        The asset.
    """

    @_model_asset(model, "champion", deps=[model_key(model.name, "evaluation")], kinds={"mlflow"})
    def champion(
        context: AssetExecutionContext, lifecycle: LifecycleResource
    ) -> dg.MaterializeResult:
        """The MLflow alias 'champion': moved to the evaluated version only if it is better."""
        from ml_platform.lifecycle.promote import promote

        decision, version = promote(model, lifecycle.step(context))
        return dg.MaterializeResult(metadata=champion_metadata(decision, version))

    return champion


def build_predictions_asset(model: ModelSpec, catalog: Catalog) -> dg.AssetsDefinition:
    """``<model>/predictions``: the newest data scored by the champion.

    Args:
        model: the model's spec (``scoring.source``, else the label source, is scored).
        catalog: the loaded specs.

    Returns:
        The asset; it depends on the champion, the scored source and the model's views.
    """
    resolved = catalog.resolved[model.name]
    scoring_source = model.scoring.source or model.label.source

    @_model_asset(
        model,
        "predictions",
        deps=[
            model_key(model.name, "champion"),
            source_key(scoring_source),
            *map(feature_key, resolved.feature_views),
        ],
        kinds={"parquet"},
    )
    def predictions(
        context: AssetExecutionContext, lifecycle: LifecycleResource
    ) -> dg.MaterializeResult:
        """The newest data scored by the champion, with an audit record of what scored what."""
        from ml_platform.lifecycle.score import score

        record = score(model, resolved, catalog, lifecycle.step(context))
        columns = read_column_schema(record.path)
        return dg.MaterializeResult(metadata=predictions_metadata(record, columns))

    return predictions


class DriftWindowConfig(dg.Config):
    """The scored window a drift report judges; nothing set means the newest predictions.

    With ``monitoring.source: calls`` the window is the service's calls: nothing set means the
    newest ``monitoring.window``; ``start``/``end`` apply, ``predictions_path`` is refused.

    Attributes:
        start: The first row timestamp judged (ISO 8601; UTC when no offset is given).
        end: The first row timestamp no longer judged (ISO 8601).
        predictions_path: One predictions parquet file to judge instead of the newest.
    """

    start: str | None = None
    end: str | None = None
    predictions_path: str | None = None


def _timestamp(value: str | None, field: str) -> datetime | None:
    """An ISO 8601 config value as a datetime (the library takes a naive one as UTC)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise dg.Failure(
            description=f"drift_report config {field}: '{value}' is not an ISO 8601 timestamp "
            "(e.g. '2025-06-01T00:00:00Z')",
            allow_retries=False,
        ) from None


def monitored_asset(model: ModelSpec) -> str:
    """The asset whose rows the drift report judges: ``predictions``, or ``deployment`` (calls)."""
    return "deployment" if model.monitoring.source == "calls" else "predictions"


def build_drift_report_asset(model: ModelSpec, catalog: Catalog) -> dg.AssetsDefinition:
    """``<model>/drift_report``: the newest scored window judged against the training reference.

    Args:
        model: the model's spec (its ``monitoring`` section).
        catalog: the loaded specs (the label source, for performance drift).

    Returns:
        The asset, with its ``no_significant_drift`` check (severity WARN: never blocking).
    """
    resolved = catalog.resolved[model.name]

    @_model_asset(
        model,
        "drift_report",
        # Judged rows: the batch predictions, or the prediction service's calls.
        deps=[model_key(model.name, monitored_asset(model))],
        kinds={"evidently"},
        checks={NO_SIGNIFICANT_DRIFT: NO_SIGNIFICANT_DRIFT_DESCRIPTION},
        blocking=False,
    )
    def drift_report(
        context: AssetExecutionContext, config: DriftWindowConfig, lifecycle: LifecycleResource
    ) -> dg.MaterializeResult:
        """Per-feature, prediction and performance drift of the newest scored window vs training."""
        from ml_platform.lifecycle.monitor import ScoredWindow, monitor_drift

        window = ScoredWindow(
            start=_timestamp(config.start, "start"),
            end=_timestamp(config.end, "end"),
            predictions_path=config.predictions_path or None,
        )
        record = monitor_drift(model, resolved, catalog, lifecycle.step(context), window=window)
        return dg.MaterializeResult(
            metadata=drift_report_metadata(record),
            check_results=[drift_check_result(record)],
            data_version=dg.DataVersion(record.report_id),
        )

    return drift_report


def build_model_assets(catalog: Catalog) -> list[dg.AssetsDefinition]:
    """The six assets of every model of the catalog, in ``MODEL_ASSETS`` order per model."""
    built: list[dg.AssetsDefinition] = []
    for model in catalog.models.values():
        built += [
            build_training_set_asset(model, catalog),
            build_model_asset(model, catalog),
            build_evaluation_asset(model),
            build_champion_asset(model),
            build_predictions_asset(model, catalog),
            build_drift_report_asset(model, catalog),
        ]
    return built
