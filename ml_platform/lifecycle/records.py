"""What the lifecycle steps leave behind, and how the next step finds it.

A step's record is written as the pointer of its directory under the artifact root (see
``ml_platform.core.storage.write_pointer``) only after the step succeeded, so the ``current_*``
readers always return the last good output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ml_platform.core import storage
from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.evaluation.report import EvaluationReport
from ml_platform.registry.client import ModelRegistry

Log = Callable[[str], None]
"""Receives a step's progress lines (an asset passes ``context.log.info``)."""

_LOGGER = logging.getLogger("ml_platform.lifecycle")


@dataclass(frozen=True)
class StepContext:
    """What every lifecycle step works with: where state lives, the engines, the run.

    Attributes:
        settings: The platform's locations (data, artifacts, checkpoints, Feast).
        registry: The MLflow tracking server and model registry.
        audit: The audit log every step records its outcome in.
        dagster_run_id: The Dagster run executing the step, if any.
        log: Receives the step's progress lines.
    """

    settings: PlatformSettings
    registry: ModelRegistry
    audit: AuditLog
    dagster_run_id: str | None = None
    log: Log = _LOGGER.info


@dataclass(frozen=True)
class ModelRecord:
    """A trained and registered model version (the ``<model>/model`` asset's current record).

    Attributes:
        model: The model (spec) name.
        version: The registered MLflow model version.
        mlflow_run_id: The training run.
        mlflow_run_url: A link to the training run in the MLflow UI.
        snapshot_id: The training set snapshot trained on.
        code_version: The platform code version that trained it.
        flavor: The model flavor that trained it (``torch``, ``xgboost``).
        best_epoch: The epoch (boosting round for trees) whose state the model has.
        epochs_run: Epochs completed in total, resumed ones included.
        resumed_from_epoch: The checkpoint's last epoch when training resumed, else None.
        samples_per_second: Training throughput.
        device: The device trained on.
        validation_loss: The validation loss at ``best_epoch``.
        trained_at: When training finished (ISO 8601, UTC).
    """

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
    flavor: str = "torch"  # records written before flavors existed are torch models

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (what the pointer stores)."""
        return asdict(self)


@dataclass(frozen=True)
class PredictionRecord:
    """One batch of predictions (the ``<model>/predictions`` asset's current record).

    Attributes:
        model: The model (spec) name.
        model_version: The champion version that scored.
        path: The parquet file of the predictions.
        rows: Rows scored.
        data_snapshot_id: Fingerprint of the scored rows.
        scored_at: When they were scored (ISO 8601, UTC).
        dagster_run_id: The Dagster run that scored them, if any.
    """

    model: str
    model_version: str
    path: str
    rows: int
    data_snapshot_id: str
    scored_at: str
    dagster_run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (what the pointer stores)."""
        return asdict(self)


def model_root(settings: PlatformSettings, model: str, *parts: str) -> str:
    """The directory of a model's lifecycle outputs under the artifact root.

    Args:
        settings: The platform settings (their artifact root).
        model: The model name.
        *parts: Sub-directories, e.g. ``"model"`` or ``"evaluation"``.

    Returns:
        ``<artifact_root>/models/<model>/<parts...>``.
    """
    return settings.artifact_path("models", model, *parts)


def _current(settings: PlatformSettings, model: str, step: str, missing: str) -> dict[str, Any]:
    """The pointer record of ``step``'s last good output; FileNotFoundError saying ``missing``."""
    record = storage.read_pointer(model_root(settings, model, step))
    if record is None:
        raise FileNotFoundError(f"model '{model}' has {missing}; materialize '{model}/{step}'")
    return record


def current_model(settings: PlatformSettings, model: str) -> ModelRecord:
    """The newest version trained and registered by ``train_model``.

    Raises:
        FileNotFoundError: The model was never trained.
    """
    return ModelRecord(**_current(settings, model, "model", "no trained version"))


def current_evaluation(settings: PlatformSettings, model: str) -> EvaluationReport:
    """The newest evaluation written by ``evaluate_model``.

    Raises:
        FileNotFoundError: The model was never evaluated.
    """
    return EvaluationReport.from_dict(_current(settings, model, "evaluation", "no evaluation"))
