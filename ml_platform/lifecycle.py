"""The model lifecycle steps the assets run: train, evaluate, promote, score.

Each step reads the current good output of the step before it (a pointer written only on
success) and writes its own output before moving its pointer, so a failed step leaves the previous
model, evaluation and predictions intact. No Dagster here: the assets are thin wrappers and these
functions are tested directly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform import datasets, registry, storage
from ml_platform.audit import AuditLog
from ml_platform.compute import load_profiles
from ml_platform.evaluation import (
    EvaluationReport,
    PromotionDecision,
    compute_metrics,
    decide_promotion,
    evaluation_gates,
    slice_metrics,
)
from ml_platform.settings import PlatformSettings
from ml_platform.spec import ModelSpec, ResolvedFeatures

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.training import FeatureSchema, TrainedModel

Log = Callable[[str], None]


def _no_log(message: str) -> None:
    del message


def model_root(settings: PlatformSettings, model: str, *parts: str) -> str:
    return settings.artifact_path("models", model, *parts)


@dataclass(frozen=True)
class ModelRecord:
    """A trained and registered model version."""

    model: str
    version: str
    mlflow_run_id: str
    mlflow_run_url: str
    snapshot_id: str
    code_version: str
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int | None
    samples_per_second: float
    device: str
    validation_loss: float
    trained_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_schema(spec: ModelSpec, resolved: ResolvedFeatures) -> FeatureSchema:
    from ml_platform.training import FeatureSchema

    categorical = tuple(resolved.categorical)
    numeric = tuple(c for c in resolved.model_inputs if c not in categorical)
    return FeatureSchema(
        numeric=numeric, categorical=categorical, label=spec.label.column, task=spec.task
    )


def training_params(spec: ModelSpec) -> dict[str, Any]:
    """Everything that, with the data snapshot and code version, determines the model."""
    params: dict[str, Any] = {
        "task": spec.task,
        "architecture": spec.model.architecture,
        **{f"model.{k}": v for k, v in sorted(spec.model.params.items())},
        **{f"training.{k}": v for k, v in spec.training.model_dump().items()},
        "compute.profile": spec.compute.profile,
        "split.validation_fraction": spec.split.validation_fraction,
        "split.test_fraction": spec.split.test_fraction,
    }
    return params


def _positive_class_weight(spec: ModelSpec, train: pd.DataFrame) -> float | None:
    weight = spec.training.positive_class_weight
    if weight != "balanced":
        return weight
    positives = float(train[spec.label.column].sum())
    negatives = float(len(train) - positives)
    return negatives / positives if positives > 0 else None


def train_model(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    settings: PlatformSettings,
    dagster_run_id: str | None = None,
    log: Log = _no_log,
) -> ModelRecord:
    """Train on the current training set, log the MLflow run and register a new version.

    Checkpoints go to a directory keyed by data snapshot and parameters, so a retried step
    (preemption, eviction, kill) resumes from the last finished epoch. The version is registered
    only after training completed, so no partial model is ever registered.
    """
    import hashlib
    import json
    import tempfile

    from ml_platform.distributed import nproc_for, train_with_torchrun
    from ml_platform.training import TrainingConfig, train

    manifest = datasets.current_training_set(settings, spec.name)
    train_frame = datasets.read_split(manifest, "train")
    validation_frame = datasets.read_split(manifest, "validation")
    params = training_params(spec)
    profile = load_profiles()[spec.compute.profile]
    config = TrainingConfig(
        epochs=spec.training.epochs,
        batch_size=spec.training.batch_size,
        learning_rate=spec.training.learning_rate,
        weight_decay=spec.training.weight_decay,
        early_stopping_patience=spec.training.early_stopping_patience,
        seed=spec.training.seed,
        device="auto" if profile.uses_gpu else "cpu",
        precision=spec.training.precision,
        compile=spec.training.compile,
        positive_class_weight=_positive_class_weight(spec, train_frame),
    )
    key = hashlib.sha256(
        json.dumps([manifest.snapshot_id, params], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    checkpoint_dir = f"{settings.checkpoint_root}/{spec.name}/{key}"
    version_code = registry.code_version()
    tags = {
        registry.TAG_DAGSTER_RUN: dagster_run_id or "",
        registry.TAG_CODE_VERSION: version_code,
        registry.TAG_SNAPSHOT: manifest.snapshot_id,
        registry.TAG_PROFILE: spec.compute.profile,
        "ml_platform.model": spec.name,
        "ml_platform.owner": spec.owner,
        # Lets a later evaluation join this version's features for rows built for another model.
        registry.TAG_FEATURE_REFS: json.dumps(resolved.feature_refs),
    }
    with registry.start_training_run(settings, spec.name, params, tags) as run:
        log(f"MLflow run {run.run_id}: {run.url}")
        nproc = nproc_for(profile.gpu_count) if profile.uses_gpu else 1
        if nproc > 1:
            # Several GPUs on one pod: torchrun workers train with DDP; rank 0 writes the model.
            log(f"training with DDP on {nproc} GPUs (torchrun)")
            with tempfile.TemporaryDirectory() as output_dir:
                result = train_with_torchrun(
                    manifest.split_path("train"),
                    manifest.split_path("validation"),
                    feature_schema(spec, resolved),
                    spec.model.architecture,
                    dict(spec.model.params),
                    config,
                    nproc=nproc,
                    output_dir=output_dir,
                    checkpoint_dir=checkpoint_dir,
                    log=log,
                    on_epoch_end=run.log_epoch,
                )
        else:
            result = train(
                train_frame,
                validation_frame,
                feature_schema(spec, resolved),
                spec.model.architecture,
                dict(spec.model.params),
                config,
                checkpoint_dir=checkpoint_dir,
                on_epoch_end=run.log_epoch,
                log=log,
            )
        best = result.history[result.best_epoch - 1] if result.history else {}
        run.log_metrics(
            {
                "best_epoch": result.best_epoch,
                "samples_per_second": result.samples_per_second,
                "best_validation_loss": best.get("validation_loss", float("nan")),
            },
            step=result.epochs_run,
        )
        if result.resumed_from_epoch is not None:
            log(f"resumed from checkpoint at epoch {result.resumed_from_epoch}")
        version = registry.log_model_version(
            run, result.model, spec.name, train_frame.loc[:, resolved.model_inputs]
        )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    record = ModelRecord(
        model=spec.name,
        version=version,
        mlflow_run_id=run.run_id,
        mlflow_run_url=run.url,
        snapshot_id=manifest.snapshot_id,
        code_version=version_code,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        resumed_from_epoch=result.resumed_from_epoch,
        samples_per_second=result.samples_per_second,
        device=result.device,
        validation_loss=float(best.get("validation_loss", float("nan"))),
        trained_at=datetime.now(UTC).isoformat(),
    )
    storage.write_pointer(model_root(settings, spec.name, "model"), record.to_dict())
    AuditLog(settings.audit_url).record(
        spec.name,
        "trained",
        model_version=version,
        data_snapshot_id=manifest.snapshot_id,
        dagster_run_id=dagster_run_id,
        rows=manifest.rows["train"],
        details={"mlflow_run_id": run.run_id, "code_version": version_code},
    )
    return record


def current_model(settings: PlatformSettings, model: str) -> ModelRecord:
    record = storage.read_pointer(model_root(settings, model, "model"))
    if record is None:
        raise FileNotFoundError(
            f"model '{model}' has no trained version; materialize '{model}/model'"
        )
    return ModelRecord(**record)


def _with_inputs_of(
    model: TrainedModel,
    version: str,
    frame: pd.DataFrame,
    spec: ModelSpec,
    settings: PlatformSettings,
) -> pd.DataFrame:
    """``frame`` plus any input column ``model`` needs that it lacks, joined point-in-time.

    A champion trained on other features is compared on the same test rows: its own features
    are fetched from Feast for those rows as of each row's timestamp.

    Raises:
        ValueError: the missing columns cannot be joined (no feature refs or no join keys).
    """
    import json

    from ml_platform.features import historical_features

    inputs = [*model.schema.numeric, *model.schema.categorical]
    missing = [c for c in inputs if c not in frame.columns]
    if not missing:
        return frame
    tags = registry.version_tags(settings, spec.name, version)
    refs = [
        r
        for r in json.loads(tags.get(registry.TAG_FEATURE_REFS, "[]"))
        if r.split(":", 1)[1] in missing
    ]
    uncovered = sorted(set(missing) - {r.split(":", 1)[1] for r in refs})
    if uncovered:
        raise ValueError(
            f"version {version} of '{spec.name}' needs columns {uncovered} that neither the test "
            "split nor its recorded feature views provide; it cannot be compared on these rows"
        )
    timestamp = datasets.current_training_set(settings, spec.name).timestamp_column
    joined = historical_features(settings, frame, refs, timestamp)
    return joined


def _score(model: TrainedModel, frame: pd.DataFrame) -> Any:
    return model.predict(frame)


def _labels(spec: ModelSpec, model: TrainedModel, frame: pd.DataFrame) -> Any:
    if spec.task == "multiclass_classification":
        return model.preprocessor.encode_labels(frame)
    return frame[spec.label.column].to_numpy()


def evaluate_model(
    spec: ModelSpec,
    settings: PlatformSettings,
    dagster_run_id: str | None = None,
    log: Log = _no_log,
) -> EvaluationReport:
    """Evaluate the newest version on the test split, and the champion on the same rows."""
    import time

    import mlflow

    record = current_model(settings, spec.name)
    manifest = datasets.current_training_set(settings, spec.name)
    test = datasets.read_split(manifest, "test")
    threshold = spec.evaluation.threshold

    def evaluate(version: str) -> tuple[dict[str, float], dict[str, Any]]:
        model = registry.load_model(settings, spec.name, version)
        rows = _with_inputs_of(model, version, test, spec, settings)
        started = time.perf_counter()
        prediction = _score(model, rows)
        seconds = time.perf_counter() - started
        truth = _labels(spec, model, test)
        metrics = compute_metrics(spec.task, truth, prediction, threshold)
        metrics["latency_ms_per_1k_rows"] = 1000 * seconds / max(len(test), 1) * 1000
        slices = slice_metrics(
            spec.task,
            test,
            truth,
            prediction,
            spec.evaluation.slices,
            threshold,
            spec.evaluation.min_slice_rows,
        )
        return metrics, slices

    metrics, slices = evaluate(record.version)
    champion = registry.champion_version(settings, spec.name)
    champion_metrics = champion_slices = None
    champion_error = None
    if champion is not None and champion != record.version:
        log(f"comparing with champion v{champion} on the same {len(test)} test rows")
        try:
            champion_metrics, champion_slices = evaluate(champion)
        except ValueError as error:
            champion_error = f"champion v{champion} could not be evaluated: {error}"
            log(champion_error)
    elif champion == record.version:
        champion_metrics, champion_slices = metrics, slices
    gates = evaluation_gates(
        spec.primary_metric,
        metrics,
        slices,
        champion_metrics,
        spec.gates.evaluation,
        champion_error,
    )
    report = EvaluationReport(
        model=spec.name,
        version=record.version,
        snapshot_id=manifest.snapshot_id,
        primary_metric=spec.primary_metric,
        metrics=metrics,
        slices=slices,
        champion_version=champion,
        champion_metrics=champion_metrics,
        champion_slices=champion_slices,
        gates=[asdict(gate) for gate in gates],
    )
    registry.client(settings)  # configures MLflow for the calls below
    with mlflow.start_run(run_id=record.mlflow_run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if v == v})
        mlflow.log_dict(report.to_dict(), "evaluation/report.json")
    storage.write_pointer(model_root(settings, spec.name, "evaluation"), report.to_dict())
    registry.tag_version(
        settings,
        spec.name,
        record.version,
        {f"ml_platform.gate.{g.name}": "passed" if g.passed else "failed" for g in gates},
    )
    failed = [g for g in gates if not g.passed]
    if failed:
        # The promotion step will not run after a failed blocking gate: record the verdict here.
        reasons = [f"gate {g.name} failed: {g.description}" for g in failed]
        registry.tag_version(
            settings,
            spec.name,
            record.version,
            {
                "ml_platform.promotion": "rejected",
                "ml_platform.promotion_reason": "; ".join(reasons),
            },
        )
        AuditLog(settings.audit_url).record(
            spec.name,
            "rejected",
            model_version=record.version,
            data_snapshot_id=manifest.snapshot_id,
            dagster_run_id=dagster_run_id,
            details={"reasons": reasons, "champion": champion},
        )
        for reason in reasons:
            log(reason)
    return report


def current_evaluation(settings: PlatformSettings, model: str) -> EvaluationReport:
    record = storage.read_pointer(model_root(settings, model, "evaluation"))
    if record is None:
        raise FileNotFoundError(
            f"model '{model}' has no evaluation; materialize '{model}/evaluation'"
        )
    return EvaluationReport.from_dict(record)


def promote(
    spec: ModelSpec,
    settings: PlatformSettings,
    dagster_run_id: str | None = None,
    log: Log = _no_log,
) -> tuple[PromotionDecision, str | None]:
    """Move the ``champion`` alias to the evaluated version when the decision says so.

    Returns:
        The decision and the champion version after it.
    """
    report = current_evaluation(settings, spec.name)
    decision = decide_promotion(report, spec)
    action = "promoted" if decision.promote else "not_promoted"
    if decision.promote:
        registry.set_champion(settings, spec.name, report.version)
    registry.tag_version(
        settings,
        spec.name,
        report.version,
        {
            "ml_platform.promotion": action,
            "ml_platform.promotion_reason": "; ".join(decision.reasons),
        },
    )
    AuditLog(settings.audit_url).record(
        spec.name,
        action,
        model_version=report.version,
        data_snapshot_id=report.snapshot_id,
        dagster_run_id=dagster_run_id,
        details={"reasons": decision.reasons, "previous_champion": report.champion_version},
    )
    for reason in decision.reasons:
        log(reason)
    return decision, registry.champion_version(settings, spec.name)


@dataclass(frozen=True)
class PredictionRecord:
    model: str
    model_version: str
    path: str
    rows: int
    data_snapshot_id: str
    scored_at: str
    dagster_run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    catalog: Any,
    settings: PlatformSettings,
    dagster_run_id: str | None = None,
    log: Log = _no_log,
) -> PredictionRecord:
    """Score the newest data with the champion and append an audit record."""
    version = registry.champion_version(settings, spec.name)
    if version is None:
        raise LookupError(
            f"model '{spec.name}' has no champion yet; materialize '{spec.name}/champion' "
            "after a successful evaluation"
        )
    model = registry.load_model(settings, spec.name, version)
    frame = datasets.build_scoring_set(spec, resolved, catalog, settings)
    prediction = model.predict(frame)
    scored_at = datetime.now(UTC)
    output = frame.drop(columns=[c for c in resolved.model_inputs if c in frame.columns])
    if prediction.ndim == 2:
        for i in range(prediction.shape[1]):
            output[f"score_{i}"] = prediction[:, i]
    else:
        output["score"] = prediction
    output["model_version"] = version
    output["scored_at"] = scored_at
    snapshot = datasets.snapshot_id(frame)
    directory = settings.data_path("models", spec.name, "predictions")
    path = f"{directory}/{scored_at:%Y%m%dT%H%M%S}-{snapshot}.parquet"
    storage.write_parquet(output, path)
    record = PredictionRecord(
        model=spec.name,
        model_version=version,
        path=path,
        rows=len(output),
        data_snapshot_id=snapshot,
        scored_at=scored_at.isoformat(),
        dagster_run_id=dagster_run_id,
    )
    storage.write_pointer(directory, record.to_dict())
    AuditLog(settings.audit_url).record(
        spec.name,
        "scored",
        model_version=version,
        data_snapshot_id=snapshot,
        dagster_run_id=dagster_run_id,
        rows=len(output),
        details={"path": path},
    )
    log(f"scored {len(output)} rows with {spec.name} v{version}")
    return record


MIN_OVERRIDE_REASON = 15


def override_promotion(
    spec: ModelSpec,
    settings: PlatformSettings,
    version: str,
    reason: str,
    requested_by: str,
    dagster_run_id: str | None = None,
) -> str | None:
    """Make ``version`` the champion regardless of the gates: explicit, explained and audited.

    Returns:
        The previous champion version.

    Raises:
        ValueError: no reason, no requester, or the version does not exist.
    """
    reason = reason.strip()
    if len(reason) < MIN_OVERRIDE_REASON:
        raise ValueError(
            f"an override needs a reason of at least {MIN_OVERRIDE_REASON} characters "
            f"(got {reason!r}); say why the gates should not apply"
        )
    if not requested_by.strip():
        raise ValueError("an override needs requested_by: who takes responsibility for it")
    if str(version) not in registry.registered_versions(settings, spec.name):
        raise ValueError(f"model '{spec.name}' has no version {version!r}")
    previous = registry.champion_version(settings, spec.name)
    registry.set_champion(settings, spec.name, str(version))
    registry.tag_version(
        settings,
        spec.name,
        str(version),
        {
            "ml_platform.promotion": "override",
            "ml_platform.override_reason": reason,
            "ml_platform.override_by": requested_by,
            "ml_platform.override_run": dagster_run_id or "",
        },
    )
    AuditLog(settings.audit_url).record(
        spec.name,
        "override_promoted",
        model_version=str(version),
        dagster_run_id=dagster_run_id,
        details={"reason": reason, "requested_by": requested_by, "previous_champion": previous},
    )
    return previous
