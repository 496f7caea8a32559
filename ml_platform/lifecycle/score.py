"""Score: the newest data scored by the champion, written as parquet and audited.

Only a champion the audit log explains scores (see ``lifecycle.champion_audit``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ml_platform.core import storage
from ml_platform.datasets.scoring_set import build_scoring_set
from ml_platform.datasets.split import snapshot_id
from ml_platform.lifecycle.champion_audit import audit_champion, raise_if_unexplained
from ml_platform.lifecycle.records import PredictionRecord, StepContext
from ml_platform.spec.catalog import Catalog, ResolvedFeatures
from ml_platform.spec.model import ModelSpec


def score(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    catalog: Catalog,
    step: StepContext,
) -> PredictionRecord:
    """Score the newest data with the champion and append an audit record.

    The output keeps the scored rows' identifiers, timestamp and model inputs (what drift
    monitoring compares with the champion's training reference), with one ``score`` column, or
    ``score_<i>`` per class for multiclass, the version and the time.

    Args:
        spec: The model spec (``scoring.source``, else the label source, is scored).
        resolved: The model's resolved features.
        catalog: The loaded specs (the scored source).
        step: The engines and run of this step (`StepContext`).

    Returns:
        The record of the predictions (also written as the predictions' current pointer).

    Raises:
        LookupError: The model has no champion yet.
        UnexplainedChampionError: The champion alias was moved outside the platform (no
            promotion or override in the audit log put it there); recorded and alerted.
    """
    check = audit_champion(
        step.registry,
        step.audit,
        step.settings,
        spec.name,
        dagster_run_id=step.dagster_run_id,
        detected_by="scoring",
    )
    raise_if_unexplained(check)
    version = check.alias_version
    if version is None:
        raise LookupError(
            f"model '{spec.name}' has no champion yet; materialize '{spec.name}/champion' "
            "after a successful evaluation"
        )
    model = step.registry.load_model(spec.name, version)
    frame = build_scoring_set(spec, resolved, catalog, step.settings)
    prediction = model.predict(frame)
    scored_at = datetime.now(UTC)
    output = frame.copy()
    if prediction.ndim == 2:
        for i in range(prediction.shape[1]):
            output[f"score_{i}"] = prediction[:, i]
    else:
        output["score"] = prediction
    output["model_version"] = version
    output["scored_at"] = scored_at
    snapshot = snapshot_id(frame)
    directory = step.settings.data_path("models", spec.name, "predictions")
    path = f"{directory}/{scored_at:%Y%m%dT%H%M%S}-{snapshot}.parquet"
    storage.write_parquet(output, path)
    record = PredictionRecord(
        model=spec.name,
        model_version=version,
        path=path,
        rows=len(output),
        data_snapshot_id=snapshot,
        scored_at=scored_at.isoformat(),
        dagster_run_id=step.dagster_run_id,
    )
    storage.write_pointer(directory, record.to_dict())
    step.audit.record(
        spec.name,
        "scored",
        model_version=version,
        data_snapshot_id=snapshot,
        dagster_run_id=step.dagster_run_id,
        rows=len(output),
        details={"path": path},
    )
    step.log(f"scored {len(output)} rows with {spec.name} v{version}")
    return record
