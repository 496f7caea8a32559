"""What the lifecycle steps leave behind, and how the next step finds it.

A step's record is written as the pointer of its directory under the artifact root (see
``ml_platform.core.storage.write_pointer``) only after the step succeeded, so the ``current_*``
readers always return the last good output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ml_platform.core import storage
from ml_platform.core.audit import AuditLog
from ml_platform.core.helpers import JsonDataclass, redact_urls
from ml_platform.core.settings import PlatformSettings
from ml_platform.evaluation.report import EvaluationReport
from ml_platform.monitoring.performance import PerformanceVerdict
from ml_platform.registry.client import ModelRegistry

Log = Callable[[str], None]
"""Receives a step's progress lines (an asset passes ``context.log.info``)."""

_LOGGER = logging.getLogger("ml_platform.lifecycle")

# Version tags of issue 10 (to move to ``registry.tags`` with the others).
TAG_EVALUATION = "ml_platform.evaluation"
"""Whether a version was evaluated: ``pending`` from registration, then ``passed``/``failed``."""
EVALUATION_PENDING = "pending"
TAG_REUSED_BY_RUN_PREFIX = "ml_platform.reused_by_run."
"""``<prefix><dagster run id>``: that run's training step reused this version (same inputs)."""


def reused_by_run_tag(dagster_run_id: str) -> str:
    """The version tag marking that ``dagster_run_id`` reused a version instead of training.

    Args:
        dagster_run_id: The Dagster run whose training step found unchanged inputs.

    Returns:
        ``ml_platform.reused_by_run.<dagster_run_id>``.
    """
    return f"{TAG_REUSED_BY_RUN_PREFIX}{dagster_run_id}"


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

    def __post_init__(self) -> None:
        # Progress lines land in the event log: a URL quoted in one loses its credentials here,
        # whichever step or library wrote it.
        sink = self.log
        object.__setattr__(self, "log", lambda line: sink(redact_urls(line)))


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
        evaluation: ``pending`` until the version's evaluation finished, then ``passed`` or
            ``failed`` (the version's ``ml_platform.evaluation`` tag when the record was made).
        plots: Training plot name (``learning_curve``) to its PNG under the artifact root.
        trained_by_run: The Dagster run that trained the version, if any.
        reused_by_run: The Dagster run that found unchanged inputs (same data snapshot,
            parameters and code) and reused this version instead of training; None when the
            record's run trained it.
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
    # Records written before issue 10 lack these: they load with the defaults.
    evaluation: str = EVALUATION_PENDING
    plots: dict[str, str] = field(default_factory=dict)
    trained_by_run: str | None = None
    reused_by_run: str | None = None

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


DriftStatus = Literal["ok", "drift", "insufficient_data"]


@dataclass(frozen=True)
class DriftReportRecord(JsonDataclass):
    """One drift report (the ``<model>/drift_report`` asset's current record).

    Attributes:
        model: The model (spec) name.
        model_version: The champion version whose training reference the window was compared with.
        report_id: The drift event id: a stable hash of model, version and the scored window's
            snapshot id (the same window against the same version gives the same id).
        status: ``ok``, ``drift`` (data drift share reached ``monitoring.drift_share``, or the
            prediction drifted) or ``insufficient_data`` (fewer rows than ``monitoring.min_rows``;
            never ``drift``).
        drift_share: Share of the monitored input columns that drifted.
        drifted_features: The drifted input columns, in spec order.
        prediction_drift: Whether the model's output distribution drifted.
        performance: Performance drift on rows whose labels arrived, or None when the window has
            no label source to read.
        rows: Rows in the window.
        html_path: The Evidently HTML report (path or URL), None when none was written.
        created_at: When the report was made (ISO 8601, UTC).
        retrain_reasons: The spec's ``monitoring.retrain_on`` triggers that fired
            (``drift_share``, ``prediction_drift``, ``performance_drop``); empty means no
            retraining is wanted.
        data_snapshot_id: Fingerprint of the scored window's rows.
        predictions_path: The predictions parquet file the window came from.
        feature_scores: Per input column, the drift test's score (None when it had no verdict).
        prediction_drift_score: The prediction drift test's score, if any.
        drift_share_threshold: The data drift share at which the window counts as drifted.
        reason: Why the status is what it is, in one line (for ``insufficient_data`` and drift).
        report_path: The full JSON report (every column's test, score, threshold and verdict).
        dagster_run_id: The Dagster run that made the report, if any.
        column_verdicts: Per input column, then ``prediction``: its test, score, threshold,
            status and reason (``ColumnVerdict.to_dict()``).
        plots: The report's pictures, name to PNG path (``drift_scores``).
    """

    model: str
    model_version: str
    report_id: str
    status: DriftStatus
    drift_share: float
    drifted_features: list[str]
    prediction_drift: bool
    performance: PerformanceVerdict | None
    rows: int
    html_path: str | None
    created_at: str
    retrain_reasons: list[str]
    data_snapshot_id: str = ""
    predictions_path: str = ""
    feature_scores: dict[str, float | None] = field(default_factory=dict)
    prediction_drift_score: float | None = None
    drift_share_threshold: float = 0.5
    reason: str | None = None
    report_path: str | None = None
    dagster_run_id: str | None = None
    column_verdicts: list[dict[str, Any]] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        """Whether the window drifted (inputs or prediction)."""
        return self.status == "drift"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReportRecord:
        """Read what ``to_dict`` wrote."""
        values = dict(data)
        performance = values.get("performance")
        values["performance"] = (
            None if performance is None else PerformanceVerdict.from_dict(performance)
        )
        return cls(**values)


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


def _current(
    settings: PlatformSettings, model: str, step: str, missing: str, asset: str | None = None
) -> dict[str, Any]:
    """The pointer record of ``step``'s last good output; FileNotFoundError saying ``missing``."""
    record = storage.read_pointer(model_root(settings, model, step))
    if record is None:
        raise FileNotFoundError(
            f"model '{model}' has {missing}; materialize '{model}/{asset or step}'"
        )
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


def current_drift_report(settings: PlatformSettings, model: str) -> DriftReportRecord:
    """The newest drift report written by ``monitor_drift``.

    Raises:
        FileNotFoundError: No drift report was made for the model yet.
    """
    return DriftReportRecord.from_dict(
        _current(settings, model, "drift", "no drift report", "drift_report")
    )
