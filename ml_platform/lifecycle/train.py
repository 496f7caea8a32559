"""Train: fit the spec's flavor on the current training set, log the MLflow run, register it.

The flavor (``spec.model.flavor``: torch or xgboost) fits the model; a torch model whose compute
profile has several visible GPUs trains in torchrun processes with DDP instead
(``ml_platform.training.distributed``). Either way the result is a ``FitResult`` whose model is a
``FittedModel``, logged and registered the same way.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform.compute.profiles import ComputeProfile, load_profiles
from ml_platform.core import storage
from ml_platform.core.leases import Leases, training_lease
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import TrainingSetManifest, current_training_set, read_split
from ml_platform.lifecycle.records import (
    EVALUATION_PENDING,
    TAG_EVALUATION,
    Log,
    ModelRecord,
    StepContext,
    model_root,
    reused_by_run_tag,
)
from ml_platform.lifecycle.reference import (
    compute_version_reference,
    reference_root,
    store_reference,
)
from ml_platform.lifecycle.training_inputs import (
    feature_schema,
    training_config,
    training_params,
)
from ml_platform.lifecycle.training_inputs import training_key as training_key_of
from ml_platform.registry.code_version import code_version
from ml_platform.registry.runs import TrainingRun
from ml_platform.registry.tags import (
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN,
    TAG_FEATURE_REFS,
    TAG_FIT,
    TAG_MODEL,
    TAG_OWNER,
    TAG_PROFILE,
    TAG_SNAPSHOT,
    TAG_TRAINING_KEY,
)
from ml_platform.spec.catalog import ResolvedFeatures
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.lifecycle.reference import VersionReference
    from ml_platform.training.config import TrainingConfig
    from ml_platform.training.flavors.base import FitResult
    from ml_platform.training.schema import FeatureSchema

# The facts of a fit that its ModelRecord keeps (FitResult fields of the same name).
_FIT_FACTS = ("best_epoch", "epochs_run", "resumed_from_epoch", "samples_per_second", "device")


def _checkpoint_dir(settings: PlatformSettings, model: str, training_key: str) -> str:
    """A directory keyed by the training key: a retried step finds its checkpoint."""
    return f"{settings.checkpoint_root}/{model}/{training_key}"


def _run_tags(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    snapshot: str,
    version_code: str,
    dagster_run_id: str | None,
    parent_run_id: str | None,
) -> dict[str, str]:
    """The training run's tags: what makes the version reproducible, and its parent run."""
    tags = {
        TAG_DAGSTER_RUN: dagster_run_id or "",
        TAG_CODE_VERSION: version_code,
        TAG_SNAPSHOT: snapshot,
        TAG_PROFILE: spec.compute.profile,
        TAG_MODEL: spec.name,
        TAG_OWNER: spec.owner,
        # Lets a later evaluation join this version's features for rows built for another model.
        TAG_FEATURE_REFS: json.dumps(resolved.feature_refs),
    }
    if parent_run_id:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    return tags


def _fit(
    spec: ModelSpec,
    schema: FeatureSchema,
    manifest: TrainingSetManifest,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    config: TrainingConfig,
    profile: ComputeProfile,
    checkpoint_dir: str,
    run: TrainingRun,
    log: Log,
) -> FitResult:
    """Fit with the spec's flavor; torch on several visible GPUs goes through torchrun."""
    from ml_platform.training.flavors.registry import get_flavor

    if spec.model.flavor == "torch" and profile.uses_gpu:
        from ml_platform.training.distributed import nproc_for

        nproc = nproc_for(profile.gpu_count)
        if nproc > 1:
            return _fit_with_torchrun(
                spec, schema, manifest, config, nproc, checkpoint_dir, run, log
            )
    train, validation = frames
    return get_flavor(spec.model.flavor).fit(
        train,
        validation,
        schema,
        dict(spec.model.params),
        config,
        architecture=spec.model.architecture,
        checkpoint_dir=checkpoint_dir,
        on_epoch_end=run.log_epoch,
        log=log,
    )


def _fit_with_torchrun(
    spec: ModelSpec,
    schema: FeatureSchema,
    manifest: TrainingSetManifest,
    config: TrainingConfig,
    nproc: int,
    checkpoint_dir: str,
    run: TrainingRun,
    log: Log,
) -> FitResult:
    """Several GPUs on one pod: torchrun workers train with DDP; rank 0 writes the model."""
    import tempfile

    from ml_platform.training.distributed import train_with_torchrun

    log(f"training with DDP on {nproc} GPUs (torchrun)")
    with tempfile.TemporaryDirectory() as output_dir:
        result = train_with_torchrun(
            manifest.split_path("train"),
            manifest.split_path("validation"),
            schema,
            spec.model.architecture,
            dict(spec.model.params),
            config,
            nproc=nproc,
            output_dir=output_dir,
            checkpoint_dir=checkpoint_dir,
            log=log,
            on_epoch_end=run.log_epoch,
        )
    from ml_platform.training.flavors.torch import fit_result

    return fit_result(result)


def _log_summary(run: TrainingRun, result: FitResult, log: Log) -> float:
    """Log the fit's summary metrics to the run; returns the best epoch's validation loss."""
    best = result.history[result.best_epoch - 1] if result.history else {}
    validation_loss = float(best.get("validation_loss", float("nan")))
    run.log_metrics(
        {
            "best_epoch": result.best_epoch,
            "samples_per_second": result.samples_per_second,
            "best_validation_loss": validation_loss,
        },
        step=result.epochs_run,
    )
    if result.resumed_from_epoch is not None:
        log(f"resumed from checkpoint at epoch {result.resumed_from_epoch}")
    return validation_loss


def _fit_facts(result: FitResult, validation_loss: float) -> dict[str, Any]:
    """The facts of a fit its record keeps, stored on the version (a retry rebuilds the record)."""
    return {
        **{name: getattr(result, name) for name in _FIT_FACTS},
        "flavor": result.model.flavor,
        "validation_loss": validation_loss,
        "trained_at": datetime.now(UTC).isoformat(),
    }


def _model_record(
    model: str,
    version: str,
    run: TrainingRun,
    snapshot: str,
    version_code: str,
    facts: dict[str, Any],
    **extra: Any,
) -> ModelRecord:
    """The record of a registered version: where it came from and how its training went."""
    # ModelRecord's first fields, in order: model, version, run id and link, snapshot, code.
    return ModelRecord(
        model,
        version,
        run.run_id,
        run.url,
        snapshot,
        version_code,
        trained_at=facts.get("trained_at") or datetime.now(UTC).isoformat(),
        **{name: facts[name] for name in (*_FIT_FACTS, "flavor", "validation_loss")},
        **extra,
    )


def _register(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    step: StepContext,
    manifest: TrainingSetManifest,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    *,
    params: dict[str, Any],
    checkpoint_dir: str,
    run_tags: dict[str, str],
    version_tags: dict[str, str],
    started_at: float,
) -> tuple[str, TrainingRun, dict[str, Any], dict[str, str]]:
    """Fit in a new MLflow run and register the version; its drift reference is stored with it.

    Returns:
        The version, its training run, the fit's facts and its training plots.
    """
    profile = load_profiles()[spec.compute.profile]
    config = training_config(spec, frames[0], profile, started_at=started_at)
    step.log(f"training budget: {config.max_seconds:g} s from the start of this step")
    with step.registry.start_training_run(spec.name, params, run_tags) as run:
        step.log(f"MLflow run {run.run_id}: {run.url}")
        schema = feature_schema(spec, resolved)
        result = _fit(
            spec, schema, manifest, frames, config, profile, checkpoint_dir, run, step.log
        )
        facts = _fit_facts(result, _log_summary(run, result, step.log))
        # Before registering: a version without its drift reference is never registered.
        reference = compute_version_reference(schema, *frames, result.model)
        inputs = frames[0].loc[:, resolved.model_inputs]
        version = step.registry.log_model_version(
            run,
            result.model,
            spec.name,
            inputs,
            tags={
                **version_tags,
                TAG_FIT: json.dumps(facts),
                TAG_EVALUATION: EVALUATION_PENDING,
            },
        )
        _store(reference, spec, step, version, run.run_id)
        plots = _write_learning_curve(spec, step, version, run, result.history)
    return version, run, facts, plots


def learning_curve_path(settings: PlatformSettings, model: str, version: str) -> str:
    """Where a version's learning curve is stored, beside the model's record.

    Args:
        settings: The platform settings (their artifact root).
        model: The model name.
        version: The registered version.

    Returns:
        ``<artifact_root>/models/<model>/model/<version>/plots/learning_curve.png``.
    """
    return model_root(settings, model, "model", version, "plots", "learning_curve.png")


def _write_learning_curve(
    spec: ModelSpec,
    step: StepContext,
    version: str,
    run: TrainingRun,
    history: list[dict[str, float]],
) -> dict[str, str]:
    """Draw the losses and the validation primary metric per epoch; store and log the PNG.

    A picture never fails a training: one that cannot be drawn is logged and left out.
    """
    from ml_platform.evaluation.plots import learning_curve_plot

    # The plot names the validation loss val_loss, like the val_<metric> it draws beside it.
    rows = [
        {("val_loss" if key == "validation_loss" else key): value for key, value in row.items()}
        for row in history
    ]
    try:
        plot = learning_curve_plot(rows, spec.primary_metric)
    except Exception as error:  # a picture never fails a training
        step.log(f"learning curve not drawn: {type(error).__name__}: {error}")
        return {}
    if plot is None:
        return {}
    path = learning_curve_path(step.settings, spec.name, version)
    storage.write_bytes(path, plot.png)
    step.registry.log_plots(run.run_id, {plot.name: plot.png})
    return {plot.name: path}


def _stored_plots(settings: PlatformSettings, model: str, version: str) -> dict[str, str]:
    """The training plots already stored for ``version`` (a reused or completed one)."""
    path = learning_curve_path(settings, model, version)
    return {"learning_curve": path} if storage.exists(path) else {}


def _store(
    reference: VersionReference, spec: ModelSpec, step: StepContext, version: str, run_id: str
) -> None:
    """Store ``version``'s drift reference with its training run and under the artifact root."""
    store_reference(
        reference,
        settings=step.settings,
        registry=step.registry,
        model=spec.name,
        version=version,
        run_id=run_id,
    )


def _complete_registration(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    step: StepContext,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    version: str,
    by_this_run: bool = True,
) -> tuple[TrainingRun, dict[str, Any]]:
    """Finish what a failed attempt of this step (or a killed run) left after registering it.

    The version is not fitted nor registered again: its drift reference is recomputed from the
    registered model and stored (idempotent), and its training run is marked FINISHED.
    """
    if by_this_run:
        step.log(f"version {version} was registered by an earlier attempt of this run: reusing it")
    else:
        step.log(
            f"version {version}'s registration was not finished (its run stopped): finishing it"
        )
    run = step.registry.training_run_of(spec.name, version)
    model = step.registry.load_model(spec.name, version)
    reference = compute_version_reference(feature_schema(spec, resolved), *frames, model)
    _store(reference, spec, step, version, run.run_id)
    step.registry.finish_run(run.run_id)
    facts = json.loads(step.registry.version_tags(spec.name, version)[TAG_FIT])
    return run, facts


def _assume_alive(holder: str) -> bool:
    """Without a way to ask, another holder is taken to be alive: never two trainings at once."""
    del holder
    return True


def train_model(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    step: StepContext,
    *,
    parent_run_id: str | None = None,
    is_alive: Callable[[str], bool] | None = None,
    force: bool = False,
) -> ModelRecord:
    """Train on the current training set, log the MLflow run and register a new version.

    A version is registered once per training key: data snapshot, parameters
    (``training_params``) and code version. Unless ``force``, a step whose key matches a
    registered version (trained by any run) trains and registers nothing: it logs
    ``unchanged inputs: reusing version N (trained by run R)``, tags the version
    ``ml_platform.reused_by_run.<run id>`` (so this run's evaluation finds it), points the
    model's record at it and returns that record. A version left incomplete by a killed run
    (no drift reference) is completed first, so re-executing a killed run never registers a
    second version.

    In a Dagster run, at most one run trains a model at a time, however it was launched: the
    step holds the lease ``train:<model>`` (``core.leases``, on the audit database) for the
    whole training, keyed by its Dagster run; a retry of the same run takes it again. A lease
    whose holder run is no longer alive (``is_alive``) is taken over, so a killed run blocks
    nothing once Dagster marks it failed. Training stops past its time budget
    (``training.max_duration``, else the compute profile's ``max_runtime_seconds``, counted from
    the start of this step), keeping its checkpoint and registering nothing.

    Checkpoints go to a directory keyed by data snapshot and parameters (the training key), so a
    retried step (preemption, eviction, kill) resumes from the last finished epoch. The version is
    registered only after training completed, so no partial model is ever registered, and at most
    once per training key and Dagster run: it is tagged with both when registered, and a retry of
    the step that finds it completes what followed (reference, pointer, audit entry) instead of
    registering another. Its drift reference
    (training inputs and validation predictions, see ``lifecycle.reference``) is computed before
    and stored with it.

    Args:
        spec: The model spec; ``model.flavor`` chooses the flavor that fits it.
        resolved: The model's resolved features.
        parent_run_id: The MLflow run of the Dagster run (``MlflowTrackingResource``); the
            training run is nested under it.
        step: The engines and run of this step (`StepContext`).
        is_alive: Whether the Dagster run holding the model's lease still runs; None takes
            every other holder to be alive.
        force: Train and register a new version even when one with the same training key
            exists (a retry of the same Dagster run still finds the version that run
            registered).

    Returns:
        The record of the registered (or reused) version, also written as the model's current
        pointer.

    Raises:
        FileNotFoundError: The model has no training set.
        TrainingDataError: The data cannot be trained on.
        ModelArchitectureError: The model params do not fit the flavor or architecture.
        TrainingDivergedError: The validation loss became NaN or infinite.
        LeaseHeld: Another live run is training this model; nothing was trained.
        TrainingBudgetExceeded: Training ran past its budget; nothing was registered.
    """
    started_at = time.time()
    if step.dagster_run_id is None:  # outside Dagster (a notebook, a test): no run to key on
        return _train(spec, resolved, step, parent_run_id, started_at, force)
    leases = Leases(step.settings.audit_url)
    with leases.held(training_lease(spec.name), step.dagster_run_id, is_alive or _assume_alive):
        return _train(spec, resolved, step, parent_run_id, started_at, force)


def _train(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    step: StepContext,
    parent_run_id: str | None,
    started_at: float,
    force: bool,
) -> ModelRecord:
    """`train_model` once the lease is held: fit and register, finish a registration or reuse."""
    manifest = current_training_set(step.settings, spec.name)
    params = training_params(spec)
    version_code = code_version()
    training_key = training_key_of(manifest.snapshot_id, params, version_code)
    # A retry of this step (same Dagster run, same training) finds the version it registered.
    identity = {TAG_TRAINING_KEY: training_key, TAG_DAGSTER_RUN: step.dagster_run_id or ""}
    registered = step.registry.find_version(spec.name, identity) if step.dagster_run_id else None
    if registered is None and not force:
        unchanged = step.registry.find_version(spec.name, {TAG_TRAINING_KEY: training_key})
        if unchanged is not None:
            return _reuse(spec, resolved, step, manifest, unchanged)
    frames = (read_split(manifest, "train"), read_split(manifest, "validation"))
    checkpoint_dir = _checkpoint_dir(step.settings, spec.name, training_key)
    tags = _run_tags(
        spec, resolved, manifest.snapshot_id, version_code, step.dagster_run_id, parent_run_id
    )
    if registered is None:
        if force:
            step.log("forced: training a new version whatever versions exist")
        version, run, facts, plots = _register(
            spec,
            resolved,
            step,
            manifest,
            frames,
            params=params,
            checkpoint_dir=checkpoint_dir,
            run_tags={**tags, TAG_TRAINING_KEY: training_key},
            version_tags=identity,
            started_at=started_at,
        )
    else:
        version = registered
        run, facts = _complete_registration(spec, resolved, step, frames, version)
        plots = _stored_plots(step.settings, spec.name, version)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    record = _model_record(
        spec.name,
        version,
        run,
        manifest.snapshot_id,
        version_code,
        facts,
        plots=plots,
        trained_by_run=step.dagster_run_id,
    )
    storage.write_pointer(model_root(step.settings, spec.name, "model"), record.to_dict())
    step.audit.record(
        spec.name,
        "trained",
        model_version=version,
        data_snapshot_id=manifest.snapshot_id,
        dagster_run_id=step.dagster_run_id,
        rows=manifest.rows["train"],
        details={"mlflow_run_id": run.run_id, "code_version": version_code},
    )
    return record


def _reuse(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    step: StepContext,
    manifest: TrainingSetManifest,
    version: str,
) -> ModelRecord:
    """Point the model at ``version``, trained on the same inputs: nothing is trained.

    The version is tagged as reused by this run before anything else, so this run's evaluation
    evaluates it. A version whose registration a killed run left unfinished (its training run
    not FINISHED, or no drift reference) is finished first.
    """
    tags = step.registry.version_tags(spec.name, version)
    trained_by = tags.get(TAG_DAGSTER_RUN) or "outside Dagster"
    step.log(f"unchanged inputs: reusing version {version} (trained by run {trained_by})")
    if step.dagster_run_id:
        step.registry.tag_version(
            spec.name, version, {reused_by_run_tag(step.dagster_run_id): "true"}
        )
    run = step.registry.training_run_of(spec.name, version)
    # A training run ends FINISHED only after the version's reference was stored everywhere.
    finished = step.registry.client.get_run(run.run_id).info.status == "FINISHED"
    reference = f"{reference_root(step.settings, spec.name, version)}/statistics.json"
    if finished and storage.exists(reference):
        facts = json.loads(tags[TAG_FIT])
    else:
        frames = (read_split(manifest, "train"), read_split(manifest, "validation"))
        run, facts = _complete_registration(
            spec, resolved, step, frames, version, by_this_run=False
        )
    record = _model_record(
        spec.name,
        version,
        run,
        tags.get(TAG_SNAPSHOT, manifest.snapshot_id),
        tags.get(TAG_CODE_VERSION, ""),
        facts,
        evaluation=tags.get(TAG_EVALUATION, EVALUATION_PENDING),
        plots=_stored_plots(step.settings, spec.name, version),
        trained_by_run=tags.get(TAG_DAGSTER_RUN) or None,
        reused_by_run=step.dagster_run_id,
    )
    storage.write_pointer(model_root(step.settings, spec.name, "model"), record.to_dict())
    step.audit.record(
        spec.name,
        "reused",
        model_version=version,
        data_snapshot_id=manifest.snapshot_id,
        dagster_run_id=step.dagster_run_id,
        details={"mlflow_run_id": run.run_id, "trained_by_run": trained_by},
    )
    return record
