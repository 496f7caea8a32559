"""Evaluate: the newest version on the test split, and the champion on the same rows.

Models are used only through the ``FittedModel`` protocol: inputs come from ``model.schema``,
predictions from ``model.predict`` and the truth from ``model.encode_labels``, so every flavor is
evaluated the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from ml_platform.core import storage
from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import current_training_set, read_split
from ml_platform.evaluation.gates import GateResult, Slices, evaluation_gates
from ml_platform.evaluation.metrics import compute_metrics
from ml_platform.evaluation.report import EvaluationReport
from ml_platform.evaluation.slices import slice_metrics
from ml_platform.lifecycle.records import Log, StepContext, current_model, model_root
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import (
    TAG_FEATURE_REFS,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    gate_tag,
)
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
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
    return metrics, slices


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


def evaluate_model(
    spec: ModelSpec,
    step: StepContext,
) -> EvaluationReport:
    """Evaluate the newest version on the test split, and the champion on the same rows.

    The report is logged to the version's training run and written as the model's current
    evaluation; each gate's verdict is tagged on the version. When a gate failed, the version is
    tagged ``rejected`` and the rejection is audited.

    Args:
        spec: The model spec.
        step: The engines and run of this step (`StepContext`).

    Returns:
        The evaluation report.

    Raises:
        FileNotFoundError: The model has no trained version or no training set.
    """
    record = current_model(step.settings, spec.name)
    manifest = current_training_set(step.settings, spec.name)
    test = read_split(manifest, "test")
    metrics, slices = evaluate_version(
        spec, record.version, test, settings=step.settings, registry=step.registry
    )
    champion = step.registry.champion_version(spec.name)
    champion_metrics = champion_slices = champion_error = None
    if champion is not None and champion != record.version:
        step.log(f"comparing with champion v{champion} on the same {len(test)} test rows")
        try:
            champion_metrics, champion_slices = evaluate_version(
                spec, champion, test, settings=step.settings, registry=step.registry
            )
        except ValueError as error:
            champion_error = f"champion v{champion} could not be evaluated: {error}"
            step.log(champion_error)
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
    step.registry.log_evaluation(record.mlflow_run_id, metrics, report.to_dict())
    storage.write_pointer(model_root(step.settings, spec.name, "evaluation"), report.to_dict())
    verdicts = {gate_tag(g.name): "passed" if g.passed else "failed" for g in gates}
    step.registry.tag_version(spec.name, record.version, verdicts)
    failed = [g for g in gates if not g.passed]
    if failed:
        _record_rejection(
            spec, report, failed, step.registry, step.audit, step.dagster_run_id, step.log
        )
    return report
