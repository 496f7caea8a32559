"""Training on DataFrames: `train` checks the splits, fits the preprocessor, trains and wraps.

Only torch and numpy are imported at module level: this module also runs on GPU machines that have
neither Dagster nor pandas (the callers' DataFrames bring pandas). Started by torchrun
(`WORLD_SIZE` > 1), `train` trains with DistributedDataParallel, one process per GPU;
`ml_platform.training.distributed` launches such runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_platform.training.config import TrainingConfig, seed_everything
from ml_platform.training.loop import train_arrays
from ml_platform.training.model import TrainedModel
from ml_platform.training.modules import build_module
from ml_platform.training.preprocessing import Preprocessor, fit_preprocessor
from ml_platform.training.progress import ValidationScorer, primary_metric_scorer
from ml_platform.training.result import RESULT_FIELDS, TrainingFacts
from ml_platform.training.schema import FeatureSchema, ModelArchitectureError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(kw_only=True)
class TrainResult(TrainingFacts):
    """What `train` returns: the facts of the run and the trained model.

    Attributes:
        model: The model with the best validation-loss weights.
    """

    model: TrainedModel


def check_serializable_params(model_params: Mapping[str, Any]) -> None:
    """Model params are saved as JSON with the model; anything else is refused up front.

    Args:
        model_params: The params for the architecture.

    Raises:
        ModelArchitectureError: The params are not JSON-serializable.
    """
    try:
        json.dumps(model_params)
    except TypeError as error:
        raise ModelArchitectureError(
            f"model.params must be JSON-serializable (they are saved with the model): {error}"
        ) from error


def _validation_scorer(
    config: TrainingConfig, preprocessor: Preprocessor, y_val: np.ndarray
) -> Callable[[np.ndarray], dict[str, float]] | None:
    """Measures the config's primary metric on the loop's raw validation outputs."""
    task = preprocessor.schema.task
    regression = task == "regression"
    truth = preprocessor.inverse_transform_target(y_val) if regression else y_val
    score: ValidationScorer | None = primary_metric_scorer(
        task, config.primary_metric, config.threshold, truth
    )
    if score is None:
        return None
    measure = score

    def on_outputs(outputs: np.ndarray) -> dict[str, float]:
        # The predictions `TrainedModel.predict` would return for the same rows.
        values = outputs.astype(np.float64)
        if task == "binary_classification":
            values = np.exp(-np.logaddexp(0.0, -values))  # sigmoid, without overflow
        elif task == "multiclass_classification":
            values = np.exp(values - values.max(axis=1, keepdims=True))
            values /= values.sum(axis=1, keepdims=True)
        else:
            values = preprocessor.inverse_transform_target(values)
        return measure(values)

    return on_outputs


def train(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    schema: FeatureSchema,
    architecture: str,
    model_params: dict[str, Any],
    config: TrainingConfig,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Trains a model on DataFrames: validate, fit the preprocessor on train, train, wrap.

    Args:
        train: Training split; the only source of preprocessing statistics.
        validation: Validation split, for early stopping and choosing the best epoch.
        schema: Columns and task.
        architecture: "mlp" or "package.module:ClassName" (see `build_module`).
        model_params: Params for the architecture; must be JSON-serializable.
        config: Training settings.
        checkpoint_dir: Where `last.pt` is kept to resume an interrupted run.
        on_epoch_end: Called with (epoch, metrics) once per epoch.
        log: Receives progress lines; defaults to the logger of `ml_platform.training.loop`.

    Returns:
        The trained model and the run's history and facts.

    Raises:
        TrainingDataError: The data cannot be trained on; the message names column and split.
        ModelArchitectureError: The architecture or params are unusable.
        TrainingDivergedError: The validation loss became NaN or infinite.
    """
    preprocessor, y_train, y_val = fit_preprocessor(train, validation, schema)
    check_serializable_params(model_params)
    x_train = preprocessor.transform(train)
    x_val = preprocessor.transform(validation)
    # Seeded here too so the initial weights, drawn before train_arrays runs, repeat.
    seed_everything(config.seed)
    module = build_module(architecture, x_train.shape[1], preprocessor.output_dim, model_params)
    result = train_arrays(
        x_train,
        y_train,
        x_val,
        y_val,
        schema.task,
        module,
        config,
        checkpoint_dir=checkpoint_dir,
        on_epoch_end=on_epoch_end,
        log=log,
        score_validation=_validation_scorer(config, preprocessor, y_val),
    )
    model = TrainedModel(
        module=result.module,
        preprocessor=preprocessor,
        schema=schema,
        architecture=architecture,
        model_params=dict(model_params),
    )
    return TrainResult(model=model, **{name: getattr(result, name) for name in RESULT_FIELDS})
