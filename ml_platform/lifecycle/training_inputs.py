"""What a training is made of: the feature schema, the parameters, the config and the budget.

The training key (data snapshot, parameters and code version, hashed) names one distinct
training: a version is registered once per key (``lifecycle.train``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ml_platform.compute.profiles import ComputeProfile
from ml_platform.spec.catalog import ResolvedFeatures
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.training.config import TrainingConfig
    from ml_platform.training.schema import FeatureSchema


def feature_schema(spec: ModelSpec, resolved: ResolvedFeatures) -> FeatureSchema:
    """The model's columns and task: what every flavor trains on.

    Args:
        spec: The model spec (label column and task).
        resolved: The model's resolved features (inputs and which of them are categorical).

    Returns:
        The numeric and categorical input columns, the label and the task.
    """
    from ml_platform.training.schema import FeatureSchema

    categorical = tuple(resolved.categorical)
    numeric = tuple(c for c in resolved.model_inputs if c not in categorical)
    return FeatureSchema(
        numeric=numeric, categorical=categorical, label=spec.label.column, task=spec.task
    )


def training_params(spec: ModelSpec) -> dict[str, Any]:
    """Everything that, with the data snapshot and code version, determines the model.

    These are the MLflow run's params and key the checkpoint directory, so a change to any of
    them trains from scratch.

    Args:
        spec: The model spec.

    Returns:
        Flat param name to value: task, flavor, architecture, ``model.*``, ``training.*``, the
        compute profile and the split fractions.
    """
    return {
        "task": spec.task,
        "flavor": spec.model.flavor,
        "architecture": spec.model.architecture,
        **{f"model.{k}": v for k, v in sorted(spec.model.params.items())},
        # The time budget decides whether a model is trained, not which: a run stopped by it
        # resumes from its checkpoint under a larger budget.
        **{
            f"training.{k}": v
            for k, v in spec.training.model_dump(exclude={"max_duration"}).items()
        },
        "compute.profile": spec.compute.profile,
        "split.validation_fraction": spec.split.validation_fraction,
        "split.test_fraction": spec.split.test_fraction,
    }


def training_config(
    spec: ModelSpec,
    train: pd.DataFrame,
    profile: ComputeProfile,
    started_at: float | None = None,
) -> TrainingConfig:
    """The flavor's training settings: the spec's ``training`` section on the profile's device.

    Args:
        spec: The model spec.
        train: The training split (a ``balanced`` class weight is computed from its labels).
        profile: The compute profile; with a GPU the device is ``auto`` (CUDA when visible).
        started_at: When the step started (``time.time()``): the training budget
            (``training.max_duration``, else the profile's ``max_runtime_seconds``) counts from
            it; None counts from the start of the fit.

    Returns:
        The training config.
    """
    from ml_platform.training.config import TrainingConfig

    return TrainingConfig(
        epochs=spec.training.epochs,
        batch_size=spec.training.batch_size,
        learning_rate=spec.training.learning_rate,
        weight_decay=spec.training.weight_decay,
        early_stopping_patience=spec.training.early_stopping_patience,
        seed=spec.training.seed,
        device="auto" if profile.uses_gpu else "cpu",
        precision=spec.training.precision,
        compile=spec.training.compile,
        positive_class_weight=_positive_class_weight(spec, train),
        max_seconds=training_budget_seconds(spec, profile),
        started_at=started_at,
        primary_metric=spec.primary_metric,
        threshold=spec.evaluation.threshold,
    )


def training_budget_seconds(spec: ModelSpec, profile: ComputeProfile) -> float:
    """The training step's wall-clock budget in seconds.

    Args:
        spec: The model spec (``training.max_duration``).
        profile: Its compute profile, whose ``max_runtime_seconds`` applies when the spec sets
            no budget.

    Returns:
        ``training.max_duration`` in seconds, else the profile's maximum runtime.
    """
    budget = spec.training.max_duration_seconds
    return budget if budget is not None else float(profile.max_runtime_seconds)


def _positive_class_weight(spec: ModelSpec, train: pd.DataFrame) -> float | None:
    weight = spec.training.positive_class_weight
    if weight != "balanced":
        return weight
    positives = float(train[spec.label.column].sum())
    negatives = float(len(train) - positives)
    return negatives / positives if positives > 0 else None


def training_key(snapshot: str, params: dict[str, Any], version_code: str) -> str:
    """What is trained, hashed: data snapshot, params and code version (keys checkpoint, version).

    Two trainings with the same key train the same model, so the second reuses the first's
    version unless forced.

    Args:
        snapshot: The training set's data snapshot id.
        params: The training parameters (``training_params``).
        version_code: The platform code version.

    Returns:
        16 hex digits.
    """
    return hashlib.sha256(
        json.dumps([snapshot, params, version_code], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
