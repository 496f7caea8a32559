"""Model specs (``kind: model``): one model's features, label, task, flavor, training and policy.

Each section of the YAML file is one class here; every section but ``features`` and ``label``
has defaults. References to other specs (feature views, sources, columns) are checked later,
against the whole catalog, by ``ml_platform.spec.catalog.resolve_model``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ml_platform.compute.profiles import load_profiles
from ml_platform.core.helpers import unknown
from ml_platform.core.tasks import DEFAULT_PRIMARY_METRIC, LOWER_IS_BETTER, Metric, Task
from ml_platform.gates.spec import DataGateSpec
from ml_platform.spec.values import (
    Cron,
    Duration,
    Name,
    PositiveDuration,
    StrictSpec,
    Timezone,
    parse_duration,
)


class FeatureSelection(StrictSpec):
    """The model's inputs: a feature service, feature views, and label-source columns."""

    service: Name | None = None
    # ``view`` (all its features) or ``view:feature``.
    views: list[str] = Field(default_factory=list)
    request: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> FeatureSelection:
        if not self.service and not self.views and not self.request:
            raise ValueError(
                "declare at least one of features.service, features.views or features.request"
            )
        return self


class LabelSpec(StrictSpec):
    """Where the labels are: a source, its label column and when each label became known."""

    source: Name
    column: str
    timestamp_column: str | None = None
    available_at_column: str | None = None
    entity_columns: list[str] | None = None


class SplitSpec(StrictSpec):
    """How the training set is split: by time, with these validation and test fractions."""

    method: Literal["time"] = "time"
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)


class ArchitectureSpec(StrictSpec):
    """The ``model`` section: the flavor that trains it, its architecture and its parameters.

    ``params`` are checked per flavor when the catalog resolves the model
    (``ml_platform.training.flavors.params.validate_params``).
    """

    flavor: Literal["torch", "xgboost"] = "torch"
    architecture: str = Field(default="mlp", pattern=r"^(mlp|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")
    params: dict[str, Any] = Field(default_factory=dict)


class TrainingSpec(StrictSpec):
    """Optimisation settings: epochs, batch size, learning rate, precision, early stopping."""

    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=4096, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0)
    early_stopping_patience: int = Field(default=3, ge=1)
    seed: int = 7
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    positive_class_weight: Annotated[float, Field(gt=0)] | Literal["balanced"] | None = None
    # The training step's wall-clock budget ('2h'); unset, the compute profile's max runtime.
    # It decides whether a model is trained, not which one: not part of the training key.
    max_duration: PositiveDuration | None = None

    @property
    def max_duration_seconds(self) -> float | None:
        """``max_duration`` in seconds, or None when the spec leaves it to the profile."""
        if self.max_duration is None:
            return None
        return parse_duration(self.max_duration).total_seconds()


class ComputeSpec(StrictSpec):
    """The compute profile the model trains on (built-in or from the deployment's profiles)."""

    profile: str = "cpu-small"

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        profiles = load_profiles()  # built-in plus the deployment's ML_PLATFORM_COMPUTE_PROFILES
        if value not in profiles:
            raise ValueError(unknown("compute profile", value, profiles))
        return value


class EvaluationSpec(StrictSpec):
    """How a model version is evaluated: threshold, primary metric and slice columns."""

    threshold: float = Field(default=0.5, gt=0, lt=1)
    primary_metric: Metric | None = None
    slices: list[str] = Field(default_factory=list)
    min_slice_rows: int = Field(default=30, ge=1)


class SliceGateSpec(StrictSpec):
    """Blocking gates on one slice column: per-slice minimums and the largest disparity."""

    column: str
    min: dict[Metric, float] = Field(default_factory=dict)
    max_disparity: dict[Metric, float] = Field(default_factory=dict)


class EvaluationGateSpec(StrictSpec):
    """Blocking evaluation gates: a version failing any of them is registered, never promoted."""

    min: dict[Metric, float] = Field(default_factory=dict)
    max: dict[Metric, float] = Field(default_factory=dict)
    # How much worse than the champion, on the same test rows, the challenger may be.
    max_regression: dict[Metric, float] = Field(default_factory=dict)
    slices: list[SliceGateSpec] = Field(default_factory=list)
    max_latency_ms_per_1k_rows: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _directions(self) -> EvaluationGateSpec:
        for metric in self.min:
            if metric in LOWER_IS_BETTER:
                raise ValueError(f"min.{metric}: lower is better for {metric}; use max.{metric}")
        for metric in self.max:
            if metric not in LOWER_IS_BETTER:
                raise ValueError(f"max.{metric}: higher is better for {metric}; use min.{metric}")
        for metric, value in self.max_regression.items():
            if value < 0:
                raise ValueError(f"max_regression.{metric}: must be >= 0, got {value}")
        return self


class GatesSpec(StrictSpec):
    """The model's blocking gates: on its training data and on its evaluation."""

    data: DataGateSpec = Field(default_factory=DataGateSpec)
    evaluation: EvaluationGateSpec = Field(default_factory=EvaluationGateSpec)


class PromotionSpec(StrictSpec):
    """When a challenger that passed its gates replaces the champion."""

    # The challenger must beat the champion on evaluation.primary_metric by at least this much.
    min_improvement: float = Field(default=0.0, ge=0)


class ScoringSpec(StrictSpec):
    """Batch scoring: the source scored (default: the label source), its window, its schedule."""

    source: Name | None = None
    window: PositiveDuration = "7d"
    schedule: Cron | None = None
    timezone: Timezone = "UTC"


class RetrainingSpec(StrictSpec):
    """When the model retrains: a cron schedule and/or declarative automation."""

    schedule: Cron | None = "0 3 * * 1"
    timezone: Timezone = "UTC"
    # Declarative automation: rebuild the model's graph when its data changes, never past a
    # failed blocking check.
    automation: bool = False


# Evidently 0.7's per-column drift tests (``ml_platform.monitoring.statistical_tests.TESTS``;
# a unit test keeps the two lists equal without spec loading importing the monitoring code).
DriftTest = Literal["wasserstein", "ks", "jensenshannon", "psi", "chisquare", "z"]


class ColumnMonitoringSpec(StrictSpec):
    """One monitored column's drift test and threshold; unset keeps Evidently's default choice."""

    test: DriftTest | None = None
    threshold: float | None = Field(default=None, gt=0)


class RetrainOnSpec(StrictSpec):
    """Which drift signals make the drift sensor request a retraining (unset: that one never)."""

    # Retrain when at least this share of the monitored inputs drifted.
    drift_share: float | None = Field(default=None, gt=0, le=1)
    # Retrain when the model's output distribution drifted.
    prediction_drift: bool = False
    # Retrain when the primary metric on newly labelled rows is worse than at evaluation by at
    # least this much (in the metric's units).
    performance_drop: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _something_fires(self) -> RetrainOnSpec:
        if self.drift_share is None and not self.prediction_drift and self.performance_drop is None:
            raise ValueError(
                "retrain_on names no trigger: set drift_share, prediction_drift: true or "
                "performance_drop (or remove retrain_on to report drift without retraining)"
            )
        return self


class MonitoringSpec(StrictSpec):
    """Drift monitoring: what the ``drift_report`` asset judges, and when drift retrains."""

    # Cron schedule of the monitoring job (predictions + drift report); None: no schedule.
    schedule: Cron | None = None
    timezone: Timezone = "UTC"
    # What is judged: the batch predictions (``predictions``) or the prediction service's
    # audited online calls (``calls``: the features and scores it served).
    source: Literal["predictions", "calls"] = "predictions"
    # The newest part of the scored window that is judged; None: all of it (scoring.window).
    window: PositiveDuration | None = None
    # Fewer scored rows give "insufficient_data", never "drift" (also the labelled rows needed
    # for a performance verdict).
    min_rows: int = Field(default=100, ge=1)
    # The inputs drift when at least this share of the monitored columns drifted.
    drift_share: float = Field(default=0.5, gt=0, le=1)
    # Per input column (or ``prediction``): test and threshold instead of Evidently's defaults.
    columns: dict[str, ColumnMonitoringSpec] = Field(default_factory=dict)
    # None: drift is reported and alerted, and never retrains the model by itself.
    retrain_on: RetrainOnSpec | None = None
    # After a drift-triggered retraining, no other one starts for this long.
    cooldown: Duration = "24h"
    # The drift sensor's default status; None: running when retrain_on is set, else stopped.
    sensor: Literal["running", "stopped"] | None = None

    @property
    def sensor_running(self) -> bool:
        """Whether the drift sensor runs by default (``sensor``, else whether retrain_on is set)."""
        if self.sensor is not None:
            return self.sensor == "running"
        return self.retrain_on is not None


class CanarySpec(StrictSpec):
    """How a canary version is judged on live traffic before it replaces the champion.

    The canary sensor promotes the canary (through the same audited promotion path) once it has
    answered ``min_calls`` calls over at least ``min_duration`` within every bound below, and
    rolls it back as soon as one bound is broken on at least ``min_calls`` calls, or when it is
    still undecided after ``max_duration``.
    """

    # Share of entities (sticky: an entity always gets the same version) the canary answers.
    traffic_share: float = Field(default=0.2, gt=0, lt=1)
    min_calls: int = Field(default=200, ge=1)
    min_duration: Duration = "15m"
    max_duration: PositiveDuration = "7d"
    # Share of the canary's calls that failed (5xx) at most.
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    # The canary's p99 latency over the champion's, at most.
    max_latency_ratio: float = Field(default=1.5, gt=0)
    # Largest Jensen-Shannon distance between the canary's and the champion's score
    # distributions on their live calls.
    max_prediction_shift: float = Field(default=0.1, gt=0, le=1)
    # Largest drop of the primary metric on labelled calls (in the metric's units) against the
    # champion's labelled calls; judged only once min_calls of each are labelled.
    max_performance_drop: float = Field(default=0.02, ge=0)


class ServingSpec(StrictSpec):
    """Online serving: the prediction service's canary policy and the profile it runs on."""

    canary: CanarySpec = Field(default_factory=CanarySpec)
    # The compute profile of the service's pods (CPU by default; a GPU profile where needed).
    profile: str = "cpu-small"
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=10, ge=1)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        profiles = load_profiles()
        if value not in profiles:
            raise ValueError(unknown("compute profile", value, profiles))
        return value

    @model_validator(mode="after")
    def _replicas(self) -> ServingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas}); "
                "raise max_replicas or lower min_replicas"
            )
        return self


class ModelSpec(StrictSpec):
    """A ``kind: model`` file: everything the platform needs to train, gate and serve a model."""

    kind: Literal["model"]
    name: Name
    owner: str = Field(min_length=1)
    description: str = ""
    task: Task
    features: FeatureSelection
    label: LabelSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: ArchitectureSpec = Field(default_factory=ArchitectureSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)

    @property
    def primary_metric(self) -> str:
        """``evaluation.primary_metric``, or the task's default (roc_auc, macro_f1, rmse)."""
        return self.evaluation.primary_metric or DEFAULT_PRIMARY_METRIC[self.task]
