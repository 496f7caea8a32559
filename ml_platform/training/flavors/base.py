"""What every flavor provides: `Flavor` fits and loads, `FittedModel` predicts, encodes and saves.

Evaluation, the registry and scoring see only `FittedModel`, so a new kind of model needs a
flavor, not changes there.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ml_platform.training.flavors.params import DEFAULT_ARCHITECTURE, validate_params
from ml_platform.training.result import TrainingFacts
from ml_platform.training.schema import ModelArchitectureError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml_platform.training.config import TrainingConfig
    from ml_platform.training.preprocessing import Preprocessor
    from ml_platform.training.schema import FeatureSchema

METADATA_FILENAME = "model.json"

EpochCallback = Callable[[int, dict[str, float]], None]
LogFunction = Callable[[str], None]

_LOGGER = logging.getLogger(__name__)


@runtime_checkable
class FittedModel(Protocol):
    """A trained model of any flavor, as evaluation, the registry and scoring use it.

    Attributes:
        flavor: The flavor that made it, "torch" or "xgboost"; a class attribute, also written
            to ``model.json`` so that `registry.load_fitted` finds the flavor again.
    """

    flavor: ClassVar[str]

    @property
    def schema(self) -> FeatureSchema:
        """Feature columns, label and task."""
        ...

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicts on raw rows holding the schema's feature columns.

        Args:
            frame: The rows; the label is not needed.

        Returns:
            Binary: P(class 1), shape (N,). Multiclass: (N, C) probabilities in the order of the
            training classes. Regression: (N,) in the label's units.
        """
        ...

    def encode_labels(self, frame: pd.DataFrame) -> np.ndarray:
        """The truth as the metrics expect it: 0/1, class indices, or values in label units.

        Args:
            frame: Rows holding the label column.

        Returns:
            Shape (N,), aligned with `predict`.
        """
        ...

    def save(self, directory: str | Path) -> None:
        """Writes ``model.json`` (with a "flavor" key) and the weights to a directory, no pickle.

        Args:
            directory: Created if missing.
        """
        ...


def encode_truth(preprocessor: Preprocessor, frame: pd.DataFrame) -> np.ndarray:
    """The truth as the metrics expect it, for every flavor: `FittedModel.encode_labels`.

    Args:
        preprocessor: The model's preprocessor, fitted on the training split.
        frame: Rows holding the label column.

    Returns:
        Multiclass: class indices in the order of the training classes. Binary and regression:
        the label column's values as they are (0/1, or values in the label's units).
    """
    schema = preprocessor.schema
    if schema.task == "multiclass_classification":
        return preprocessor.encode_labels(frame)
    return frame[schema.label].to_numpy()


@dataclass(kw_only=True)
class FitResult(TrainingFacts):
    """What `Flavor.fit` returns: the facts of the run (`TrainingFacts`) and the fitted model.

    Attributes:
        model: The fitted model, at its best validation loss.
    """

    model: FittedModel


@dataclass(frozen=True)
class FitJob:
    """One fit as a flavor's `Flavor._fit` receives it, its params already validated.

    Attributes:
        train: Training split; the only source of preprocessing statistics.
        validation: Validation split, for early stopping and the best epoch.
        schema: Columns and task.
        params: The spec's ``model.params``, valid for the flavor.
        config: Training settings.
        architecture: The spec's ``model.architecture``.
        checkpoint_dir: Where an interrupted fit leaves the state it resumes from, if anywhere.
        on_epoch_end: Called with (epoch, metrics) after each epoch or boosting round.
        log: Receives progress lines.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    schema: FeatureSchema
    params: dict[str, Any]
    config: TrainingConfig
    architecture: str
    checkpoint_dir: Path | None
    on_epoch_end: EpochCallback | None
    log: LogFunction


class Flavor(abc.ABC):
    """A kind of model: fits one from DataFrames and loads a saved one back.

    A flavor implements `_fit` and `load`; `fit` checks the params against the flavor's schema
    (`params.validate_params`) first, so every flavor rejects bad params the same way.
    """

    name: ClassVar[str]

    def fit(
        self,
        train: pd.DataFrame,
        validation: pd.DataFrame,
        schema: FeatureSchema,
        params: dict[str, Any],
        config: TrainingConfig,
        *,
        architecture: str = DEFAULT_ARCHITECTURE,
        checkpoint_dir: str | Path | None = None,
        on_epoch_end: EpochCallback | None = None,
        log: LogFunction | None = None,
    ) -> FitResult:
        """Fits a model; statistics come from ``train``, early stopping from ``validation``.

        Args:
            train: Training split.
            validation: Validation split.
            schema: Columns and task.
            params: The spec's ``model.params`` (see `params` for each flavor's).
            config: Training settings (seed, device, patience, class weight...).
            architecture: The spec's ``model.architecture``; flavors without one ignore it.
            checkpoint_dir: Where an interrupted fit leaves the state it resumes from.
            on_epoch_end: Called with (epoch, metrics) after each epoch or boosting round.
            log: Receives progress lines; defaults to this module's logger.

        Returns:
            The model and the run's history and facts.

        Raises:
            ModelArchitectureError: The params are not valid for the flavor; the message has one
                ``model.params.<field>: <what> (<fix>)`` part per problem.
            TrainingDataError: The data cannot be trained on.
            TrainingDivergedError: The validation loss became NaN or infinite.
            TrainingBudgetExceeded: ``config.max_seconds`` passed with epochs or rounds left;
                the checkpoint of the last one is kept.
        """
        # pydantic only when fitting: a GPU image that just loads torch models may lack it.
        problems = validate_params(self.name, architecture, params)
        if problems:
            raise ModelArchitectureError("; ".join(problems))
        job = FitJob(
            train=train,
            validation=validation,
            schema=schema,
            params=dict(params),
            config=config,
            architecture=architecture,
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
            on_epoch_end=on_epoch_end,
            log=log or _LOGGER.info,
        )
        return self._fit(job)

    @abc.abstractmethod
    def _fit(self, job: FitJob) -> FitResult:
        """Fits a model for a job whose params are valid for this flavor."""

    @abc.abstractmethod
    def load(self, directory: str | Path) -> FittedModel:
        """Loads a model this flavor saved, without unpickling anything.

        Args:
            directory: Holds ``model.json`` and the weights.

        Returns:
            The model.
        """
