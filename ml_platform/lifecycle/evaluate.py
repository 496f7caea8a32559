"""Evaluate: this run's version on the test split, and the champion on the same rows.

The evaluated version is the one the step's Dagster run registered (found by its
``dagster_run_id`` tag) or reused (its ``ml_platform.reused_by_run.<run id>`` tag), never "the
newest": concurrent runs each evaluate their own. The report
is written per version (``evaluation/<version>``), where promotion reads it, and as the model's
current evaluation.

Models are used only through the ``FittedModel`` protocol: inputs come from ``model.schema``,
predictions from ``model.predict`` and the truth from ``model.encode_labels``, so every flavor is
evaluated the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ml_platform.core import storage
from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import current_training_set, read_split
from ml_platform.evaluation.gates import GateResult, Slices, evaluation_gates
from ml_platform.evaluation.metrics import compute_metrics
from ml_platform.evaluation.report import EvaluationReport
from ml_platform.evaluation.slices import slice_metrics
from ml_platform.lifecycle.records import (
    TAG_EVALUATION,
    Log,
    StepContext,
    current_model,
    model_root,
    reused_by_run_tag,
)
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import (
    TAG_DAGSTER_RUN,
    TAG_FEATURE_REFS,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    gate_tag,
)
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml_platform.training.flavors.base import FittedModel


def _with_inputs_of(
    model: FittedModel,
    version: str,
    frame: pd.DataFrame,
    spec: ModelSpec,
    settings: PlatformSettings,
    registry: ModelRegistry,
) -> pd.DataFrame:
    """``frame`` plus any input column ``model`` needs that it lacks, joined point-in-time.

    A champion trained on other features is compared on the same test rows: its own features
    are fetched from Feast for those rows as of each row's timestamp.

    Raises:
        ValueError: the missing columns cannot be joined (no feature refs or no join keys).
    """
    from ml_platform.features.retrieval import historical_features

    inputs = [*model.schema.numeric, *model.schema.categorical]
    missing = [c for c in inputs if c not in frame.columns]
    if not missing:
        return frame
    tags = registry.version_tags(spec.name, version)
    refs = [
        r for r in json.loads(tags.get(TAG_FEATURE_REFS, "[]")) if r.split(":", 1)[1] in missing
    ]
    uncovered = sorted(set(missing) - {r.split(":", 1)[1] for r in refs})
    if uncovered:
        raise ValueError(
            f"version {version} of '{spec.name}' needs columns {uncovered} that neither the test "
            "split nor its recorded feature views provide; it cannot be compared on these rows"
        )
    timestamp = current_training_set(settings, spec.name).timestamp_column
    return historical_features(settings, frame, refs, timestamp)


def evaluate_version(
    spec: ModelSpec,
    version: str,
    test: pd.DataFrame,
    *,
    settings: PlatformSettings,
    registry: ModelRegistry,
) -> tuple[dict[str, float], Slices]:
    """Test metrics and per-slice metrics of one registered version on the given rows.

    Args:
        spec: The model spec (task, threshold, slices).
        version: The registered version to load and score.
        test: The test rows; input columns the version needs and they lack are joined from
            Feast point-in-time.
        settings: The platform settings (the Feast store, for such joins).
        registry: The MLflow backend to load the version from.

    Returns:
        The metrics (with ``latency_ms_per_1k_rows``) and the metrics per slice.

    Raises:
        ValueError: The version needs input columns that cannot be joined to these rows.
    """
    scored = _score_version(spec, version, test, settings=settings, registry=registry)
    return scored.metrics, scored.slices


@dataclass(frozen=True)
class _ScoredVersion:
    """One version's predictions on the test rows, and what they measure."""

    metrics: dict[str, float]
    slices: Slices
    truth: np.ndarray
    prediction: np.ndarray


def _score_version(
    spec: ModelSpec,
    version: str,
    test: pd.DataFrame,
    *,
    settings: PlatformSettings,
    registry: ModelRegistry,
) -> _ScoredVersion:
    """``evaluate_version``, keeping the truth and the predictions for the plots."""
    threshold = spec.evaluation.threshold
    model = registry.load_model(spec.name, version)
    rows = _with_inputs_of(model, version, test, spec, settings, registry)
    started = time.perf_counter()
    prediction = model.predict(rows)
    seconds = time.perf_counter() - started
    truth = model.encode_labels(test)
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
    return _ScoredVersion(metrics, slices, truth, prediction)


def _write_plots(
    spec: ModelSpec,
    version: str,
    scored: _ScoredVersion,
    champion: tuple[str, _ScoredVersion] | None,
    step: StepContext,
    mlflow_run_id: str,
) -> dict[str, str]:
    """Render the evaluation's plots, store them beside the report and log them to MLflow.

    Pictures are presentation: one that cannot be drawn is logged and left out, and the
    evaluation (metrics, gates) stands without it.

    Returns:
        Plot name to the PNG's path under the version's evaluation directory.
    """
    from ml_platform.evaluation.plots import Scored, evaluation_plots, slice_plot

    try:
        plots = evaluation_plots(
            spec.task,
            scored.truth,
            Scored(f"v{version}", scored.prediction),
            threshold=spec.evaluation.threshold,
            champion=Scored(f"v{champion[0]} (champion)", champion[1].prediction)
            if champion
            else None,
        )
        slices = slice_plot(
            scored.slices, spec.primary_metric, champion[1].slices if champion else None
        )
    except Exception as error:  # a picture never fails an evaluation
        step.log(f"evaluation plots not drawn: {type(error).__name__}: {error}")
        return {}
    plots += [slices] if slices is not None else []
    directory = evaluation_directory(step, spec.name, version)
    paths = {plot.name: f"{directory}/plots/{plot.name}.png" for plot in plots}
    for plot in plots:
        storage.write_bytes(paths[plot.name], plot.png)
    step.registry.log_plots(mlflow_run_id, {plot.name: plot.png for plot in plots})
    return paths


def _record_rejection(
    spec: ModelSpec,
    report: EvaluationReport,
    failed: list[GateResult],
    registry: ModelRegistry,
    audit: AuditLog,
    dagster_run_id: str | None,
    log: Log,
) -> None:
    """Failed blocking gates stop the promotion step from running: record the verdict here."""
    reasons = [f"gate {g.name} failed: {g.description}" for g in failed]
    registry.tag_version(
        spec.name,
        report.version,
        {TAG_PROMOTION: "rejected", TAG_PROMOTION_REASON: "; ".join(reasons)},
    )
    audit.record(
        spec.name,
        "rejected",
        model_version=report.version,
        data_snapshot_id=report.snapshot_id,
        dagster_run_id=dagster_run_id,
        details={"reasons": reasons, "champion": report.champion_version},
    )
    for reason in reasons:
        log(reason)


def run_version(spec: ModelSpec, step: StepContext) -> tuple[str, str | None]:
    """The version this step's Dagster run registered or reused, else the model's current one.

    A run whose training step found unchanged inputs tagged the version it reused
    (``reused_by_run_tag``): concurrent runs each find their own.

    Args:
        spec: The model spec.
        step: The engines and run of this step.

    Returns:
        The version, and the MLflow run it was trained in when known from the model's current
        record (None when it was found by the Dagster run tag).

    Raises:
        FileNotFoundError: The run registered nothing and the model was never trained.
    """
    if step.dagster_run_id:
        version = step.registry.find_version(spec.name, {TAG_DAGSTER_RUN: step.dagster_run_id})
        if version is not None:
            step.log(f"version {version}: the version this run ({step.dagster_run_id}) trained")
            return version, None
        reused = {reused_by_run_tag(step.dagster_run_id): "true"}
        version = step.registry.find_version(spec.name, reused)
        if version is not None:
            step.log(f"version {version}: the version this run ({step.dagster_run_id}) reused")
            return version, None
        why = f"run {step.dagster_run_id} trained no version of '{spec.name}'"
    else:
        why = "the step has no Dagster run"
    record = current_model(step.settings, spec.name)
    step.log(f"version {record.version}: the model's newest trained version, as {why}")
    return record.version, record.mlflow_run_id


def evaluation_directory(step: StepContext, model: str, version: str) -> str:
    """Where the evaluation of one version is written (its pointer is the report).

    Args:
        step: The engines of the step (their artifact root).
        model: The model.
        version: The evaluated version.

    Returns:
        ``<artifact_root>/models/<model>/evaluation/<version>``.
    """
    return model_root(step.settings, model, "evaluation", version)


def evaluation_of(step: StepContext, model: str, version: str) -> EvaluationReport:
    """The evaluation ``evaluate_model`` wrote for ``version``.

    Args:
        step: The engines of the step.
        model: The model.
        version: The evaluated version.

    Returns:
        The report.

    Raises:
        FileNotFoundError: The version was never evaluated.
    """
    data = storage.read_pointer(evaluation_directory(step, model, version))
    if data is None:
        raise FileNotFoundError(
            f"version {version} of model '{model}' has no evaluation; materialize "
            f"'{model}/evaluation' in the run that trained it"
        )
    return EvaluationReport.from_dict(data)


def evaluate_model(
    spec: ModelSpec,
    step: StepContext,
) -> EvaluationReport:
    """Evaluate this run's version on the test split, and the champion on the same rows.

    The version is the one the step's Dagster run registered or reused (``run_version``); a
    run that trained none (evaluation materialized alone) evaluates the model's newest trained
    version. The report is logged to the version's training run and written for the version
    and as the model's current evaluation; each gate's verdict is tagged on the version, and
    its ``ml_platform.evaluation`` tag turns from ``pending`` to ``passed`` or ``failed``. When
    a gate failed, the version is tagged ``rejected`` and the rejection is audited.

    Args:
        spec: The model spec.
        step: The engines and run of this step (`StepContext`).

    Returns:
        The evaluation report.

    Raises:
        FileNotFoundError: The model has no trained version or no training set.
    """
    version, mlflow_run_id = run_version(spec, step)
    if mlflow_run_id is None:
        mlflow_run_id = step.registry.training_run_of(spec.name, version).run_id
    manifest = current_training_set(step.settings, spec.name)
    test = read_split(manifest, "test")
    scored = _score_version(spec, version, test, settings=step.settings, registry=step.registry)
    metrics, slices = scored.metrics, scored.slices
    champion = step.registry.champion_version(spec.name)
    champion_metrics = champion_slices = champion_error = None
    champion_scored: tuple[str, _ScoredVersion] | None = None
    if champion is not None and champion != version:
        step.log(f"comparing with champion v{champion} on the same {len(test)} test rows")
        try:
            on_same_rows = _score_version(
                spec, champion, test, settings=step.settings, registry=step.registry
            )
            champion_metrics, champion_slices = on_same_rows.metrics, on_same_rows.slices
            champion_scored = (champion, on_same_rows)
        except ValueError as error:
            champion_error = f"champion v{champion} could not be evaluated: {error}"
            step.log(champion_error)
    elif champion == version:
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
        version=version,
        snapshot_id=manifest.snapshot_id,
        primary_metric=spec.primary_metric,
        metrics=metrics,
        slices=slices,
        champion_version=champion,
        champion_metrics=champion_metrics,
        champion_slices=champion_slices,
        gates=[asdict(gate) for gate in gates],
        threshold=spec.evaluation.threshold if spec.task == "binary_classification" else None,
        plots=_write_plots(spec, version, scored, champion_scored, step, mlflow_run_id),
    )
    step.registry.log_evaluation(mlflow_run_id, metrics, report.to_dict())
    storage.write_pointer(evaluation_directory(step, spec.name, version), report.to_dict())
    storage.write_pointer(model_root(step.settings, spec.name, "evaluation"), report.to_dict())
    verdicts = {gate_tag(g.name): "passed" if g.passed else "failed" for g in gates}
    failed = [g for g in gates if not g.passed]
    # Last: "pending" (set at registration) turns to a verdict once the evaluation is stored.
    verdicts[TAG_EVALUATION] = "failed" if failed else "passed"
    step.registry.tag_version(spec.name, version, verdicts)
    if failed:
        _record_rejection(
            spec, report, failed, step.registry, step.audit, step.dagster_run_id, step.log
        )
    return report
