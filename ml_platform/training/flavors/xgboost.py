"""The XGBoost flavor: gradient-boosted trees on the platform's preprocessed features.

Features and labels go through the same `Preprocessor` as the torch flavor (binary labels 0/1,
multiclass labels as class indices, regression targets in the label's units), so the task logic
lives in one place. One boosting round is one "epoch" of the history: MLflow logs it per round,
early stopping counts rounds, and `best_epoch` is the best round. The model is saved as
XGBoost's native UBJSON (``model.ubj``) beside ``model.json``: nothing is pickled.

xgboost is imported inside the functions that use it, so the registry can name this flavor
without importing it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ml_platform.core.storage import write_atomically
from ml_platform.training.flavors.base import (
    METADATA_FILENAME,
    FitJob,
    FitResult,
    Flavor,
    LogFunction,
    encode_truth,
)
from ml_platform.training.flavors.params import DEFAULT_ARCHITECTURE
from ml_platform.training.flavors.xgboost_rounds import (
    CHECKPOINT_FILENAME,
    BoosterCheckpoint,
    RoundProgress,
    RoundTracker,
    fingerprint_fields,
    round_callback,
)
from ml_platform.training.model_files import read_saved_model
from ml_platform.training.preprocessing import Preprocessor, fit_preprocessor
from ml_platform.training.progress import primary_metric_scorer
from ml_platform.training.schema import (
    FeatureSchema,
    ModelArchitectureError,
)

if TYPE_CHECKING:
    import pandas as pd
    import xgboost

    from ml_platform.training.config import TrainingConfig
    from ml_platform.training.flavors.params import XGBoostParams

MODEL_FORMAT_VERSION = 1
BOOSTER_FILENAME = "model.ubj"
DEFAULT_CHECKPOINT_EVERY = 10
# Objective and evaluation metrics per task: the first metric is the loss, "error" the accuracy's
# complement.
OBJECTIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "binary_classification": ("binary:logistic", ("logloss", "error")),
    "multiclass_classification": ("multi:softprob", ("mlogloss", "merror")),
    "regression": ("reg:squarederror", ("rmse",)),
}
# Spec params that steer the run rather than the trees; the booster never sees them.
_RUN_PARAMS = {"n_estimators", "early_stopping_rounds", "scale_pos_weight"}


@dataclass(eq=False)
class XGBoostModel:
    """A trained booster with the preprocessor that feeds it raw DataFrames.

    Attributes:
        booster: The XGBoost booster; it may hold more rounds than the best one.
        preprocessor: Encoder fitted on the training split.
        schema: Columns and task.
        params: The spec's ``model.params`` with defaults filled in.
        booster_params: The parameters the booster was trained with (objective, seed...).
        best_iteration: 0-based index of the best round; predictions use rounds up to it.
    """

    booster: xgboost.Booster
    preprocessor: Preprocessor
    schema: FeatureSchema
    params: dict[str, Any]
    booster_params: dict[str, Any]
    best_iteration: int

    flavor: ClassVar[str] = "xgboost"

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicts on raw rows.

        Args:
            frame: Rows with the schema's feature columns (the label is not needed).

        Returns:
            float64: binary, the probability of class 1 (N,); multiclass, class probabilities
            (N, C) in the order of `preprocessor.classes`; regression, values (N,) in the
            label's units.
        """
        features = self.preprocessor.transform(frame)
        multiclass = self.schema.task == "multiclass_classification"
        if features.shape[0] == 0:
            shape = (0, self.preprocessor.output_dim) if multiclass else (0,)
            return np.zeros(shape, dtype=np.float64)
        output = self.booster.inplace_predict(
            features, iteration_range=(0, self.best_iteration + 1)
        )
        predictions = np.asarray(output, dtype=np.float64)
        return predictions.reshape(len(features), -1) if multiclass else predictions.reshape(-1)

    def encode_labels(self, frame: pd.DataFrame) -> np.ndarray:
        """The truth for the metrics, as every flavor encodes it (`base.encode_truth`)."""
        return encode_truth(self.preprocessor, frame)

    def save(self, directory: str | Path) -> None:
        """Writes ``model.ubj`` (XGBoost's UBJSON) and ``model.json``; nothing is pickled.

        Args:
            directory: Created if missing; existing files of the same names are replaced.
        """
        import xgboost

        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        metadata = {
            "flavor": self.flavor,
            "format_version": MODEL_FORMAT_VERSION,
            "schema": self.schema.to_dict(),
            "preprocessor": self.preprocessor.to_dict(),
            "params": self.params,
            "booster_params": self.booster_params,
            "best_iteration": self.best_iteration,
            "xgboost_version": xgboost.__version__,
        }
        text = json.dumps(metadata, indent=2, sort_keys=True)
        raw = bytes(self.booster.save_raw(raw_format="ubj"))
        write_atomically(target / BOOSTER_FILENAME, lambda path: path.write_bytes(raw))
        write_atomically(target / METADATA_FILENAME, lambda path: path.write_text(text))

    @classmethod
    def load(cls, directory: str | Path) -> XGBoostModel:
        """Loads a model written by `save` with XGBoost's own reader, without pickle.

        Args:
            directory: Holds ``model.json`` and ``model.ubj``.

        Returns:
            The model, predicting on the CPU.

        Raises:
            ValueError: A file is missing, of another flavor or format version, or the booster
                has fewer rounds than the best iteration.
        """
        import xgboost

        source = Path(directory)
        metadata_path, booster_path = source / METADATA_FILENAME, source / BOOSTER_FILENAME
        metadata = read_saved_model(
            source, BOOSTER_FILENAME, "was the model saved by XGBoostModel?", MODEL_FORMAT_VERSION
        )
        if metadata.get("flavor") != cls.flavor:
            raise ValueError(f"{metadata_path} is a {metadata.get('flavor')!r} model, not xgboost")
        booster = xgboost.Booster()
        booster.load_model(str(booster_path))
        best_iteration = int(metadata["best_iteration"])
        if not 0 <= best_iteration < booster.num_boosted_rounds():
            raise ValueError(
                f"{metadata_path}: best_iteration {best_iteration} is outside the "
                f"{booster.num_boosted_rounds()} rounds of {booster_path}"
            )
        return cls(
            booster=booster,
            preprocessor=Preprocessor.from_dict(metadata["preprocessor"]),
            schema=FeatureSchema.from_dict(metadata["schema"]),
            params=metadata["params"],
            booster_params=metadata["booster_params"],
            best_iteration=best_iteration,
        )


def _parse_params(job: FitJob) -> XGBoostParams:
    """The job's params (already validated) with defaults; the task-specific checks."""
    from ml_platform.training.flavors.params import XGBoostParams

    if job.architecture != DEFAULT_ARCHITECTURE:
        job.log(
            f"model.architecture {job.architecture!r} is ignored: the xgboost flavor grows trees"
        )
    parsed = XGBoostParams.model_validate(job.params)
    if parsed.scale_pos_weight is not None and job.schema.task != "binary_classification":
        raise ModelArchitectureError(
            f"model.params.scale_pos_weight: applies to binary_classification only, not "
            f"{job.schema.task} (remove it)"
        )
    return parsed


def resolve_xgboost_device(config: TrainingConfig, log: LogFunction) -> str:
    """XGBoost's device for a training config: "cuda:N" when it resolves to a GPU, else "cpu".

    Args:
        config: Its ``device``: "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N".
        log: Told when "auto" finds a GPU that this xgboost build cannot use.

    Returns:
        The device string for XGBoost's ``device`` parameter.

    Raises:
        ValueError: A GPU was asked for explicitly but none is available, or xgboost was built
            without CUDA (the ``xgboost-cpu`` package).
    """
    import xgboost

    from ml_platform.training.config import resolve_device

    if config.device == "cpu":
        return "cpu"
    device = resolve_device(config.device)
    if device.type != "cuda":
        return "cpu"
    if not xgboost.build_info().get("USE_CUDA"):
        message = (
            f"xgboost {xgboost.__version__} is built without CUDA (the xgboost-cpu package); "
            f"install the `xgboost` package on GPU images"
        )
        if config.device != "auto":
            raise ValueError(f"device {config.device!r}: {message}, or use device 'cpu'")
        log(f"a GPU is available but {message}; training on the CPU")
        return "cpu"
    return f"cuda:{device.index}"


def _booster_params(
    parsed: XGBoostParams, preprocessor: Preprocessor, config: TrainingConfig
) -> dict[str, Any]:
    """XGBoost's parameters: the spec's tree params, the task's objective, the config's seed."""
    task = preprocessor.schema.task
    objective, metrics = OBJECTIVES[task]
    params: dict[str, Any] = {
        **parsed.model_dump(exclude=_RUN_PARAMS),
        "objective": objective,
        "eval_metric": list(metrics),
        "seed": config.seed,
    }
    if task == "multiclass_classification":
        params["num_class"] = preprocessor.output_dim
    weight = parsed.scale_pos_weight
    if weight is None and task == "binary_classification":
        weight = config.positive_class_weight
    if weight is not None:
        params["scale_pos_weight"] = weight
    return params


def _matrices(
    parsed: XGBoostParams, arrays: Mapping[str, np.ndarray]
) -> tuple[xgboost.DMatrix, xgboost.DMatrix]:
    import xgboost

    if parsed.tree_method == "hist":
        # Quantized once up front: less memory than a DMatrix plus the histogram index.
        train = xgboost.QuantileDMatrix(
            arrays["x_train"], label=arrays["y_train"], max_bin=parsed.max_bin
        )
        validation = xgboost.QuantileDMatrix(arrays["x_val"], label=arrays["y_val"], ref=train)
        return train, validation
    return (
        xgboost.DMatrix(arrays["x_train"], label=arrays["y_train"]),
        xgboost.DMatrix(arrays["x_val"], label=arrays["y_val"]),
    )


def _encode(
    train: pd.DataFrame, validation: pd.DataFrame, schema: FeatureSchema
) -> tuple[Preprocessor, dict[str, np.ndarray]]:
    """Checks and encodes both splits with the platform's preprocessor."""
    preprocessor, y_train, y_val = fit_preprocessor(train, validation, schema)
    if schema.task == "regression":  # trees need no standardized target: keep the label's units
        y_train = preprocessor.inverse_transform_target(y_train)
        y_val = preprocessor.inverse_transform_target(y_val)
    arrays = {
        "x_train": preprocessor.transform(train),
        "y_train": y_train,
        "x_val": preprocessor.transform(validation),
        "y_val": y_val,
    }
    return preprocessor, arrays


def _validation_scorer(
    job: FitJob, arrays: Mapping[str, np.ndarray]
) -> Callable[[xgboost.Booster], dict[str, float]] | None:
    """Measures the config's primary metric of a booster on the validation split."""
    score = primary_metric_scorer(
        job.schema.task, job.config.primary_metric, job.config.threshold, arrays["y_val"]
    )
    if score is None:
        return None
    measure = score

    def on_booster(booster: xgboost.Booster) -> dict[str, float]:
        # Every tree so far: probabilities (binary, multiclass) or values in the label's units.
        return measure(np.asarray(booster.inplace_predict(arrays["x_val"]), dtype=np.float64))

    return on_booster


def _patience(parsed: XGBoostParams, config: TrainingConfig) -> int:
    if parsed.early_stopping_rounds is not None:
        return parsed.early_stopping_rounds
    return config.early_stopping_patience


def _boost(
    run_params: dict[str, Any],
    parsed: XGBoostParams,
    arrays: Mapping[str, np.ndarray],
    booster: xgboost.Booster | None,
    tracker: RoundTracker,
    log: LogFunction,
) -> xgboost.Booster:
    """Boosts the remaining rounds, continuing ``booster`` when resuming; checkpoints at the end."""
    import xgboost

    dtrain, dval = _matrices(parsed, arrays)
    done = tracker.progress.rounds
    log(
        f"training XGBoost on {run_params['device']}: {dtrain.num_row()} train rows, "
        f"{dval.num_row()} validation rows, {dtrain.num_col()} features, rounds "
        f"{done + 1}..{parsed.n_estimators}"
    )
    trained = xgboost.train(
        run_params,
        dtrain,
        num_boost_round=parsed.n_estimators - done,
        evals=[(dtrain, "train"), (dval, "validation")],
        verbose_eval=False,
        xgb_model=booster,
        callbacks=[round_callback(tracker)],
    )
    tracker.save(trained)
    return trained


def _fitted_model(
    booster: xgboost.Booster,
    preprocessor: Preprocessor,
    parsed: XGBoostParams,
    booster_params: dict[str, Any],
    best_round: int,
) -> XGBoostModel:
    # Predictions take DataFrames from the host; the saved booster names its best round too.
    booster.set_param({"device": "cpu"})
    booster.set_attr(best_iteration=str(best_round - 1))
    return XGBoostModel(
        booster=booster,
        preprocessor=preprocessor,
        schema=preprocessor.schema,
        params=parsed.model_dump(),
        booster_params=booster_params,
        best_iteration=best_round - 1,
    )


class XGBoostFlavor(Flavor):
    """Trains gradient-boosted trees with XGBoost, on the GPU when the config resolves to one.

    ``fit`` boosts up to ``model.params.n_estimators`` rounds and stops early on the validation
    loss (logloss, mlogloss or rmse) after ``early_stopping_rounds`` rounds without improvement
    (default: the config's ``early_stopping_patience``). With a ``checkpoint_dir``, the booster
    is checkpointed every ``checkpoint_every`` rounds and at the end, and a fit of the same data
    and params resumes from it. ``architecture`` is ignored (logged when not "mlp").
    """

    name = "xgboost"

    def __init__(self, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        """Creates the flavor.

        Args:
            checkpoint_every: Rounds between checkpoints (one is also written at the end).
        """
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
        self.checkpoint_every = checkpoint_every

    def _fit(self, job: FitJob) -> FitResult:
        """Boosts the job's rounds; see the class docstring."""
        parsed = _parse_params(job)
        preprocessor, arrays = _encode(job.train, job.validation, job.schema)
        booster_params = _booster_params(parsed, preprocessor, job.config)
        checkpoint = None
        if job.checkpoint_dir is not None:
            fields = fingerprint_fields(booster_params, arrays)
            checkpoint = BoosterCheckpoint(job.checkpoint_dir / CHECKPOINT_FILENAME, fields)
        resumed = checkpoint.load(job.log) if checkpoint is not None else None
        booster, progress = resumed if resumed is not None else (None, RoundProgress())
        resumed_from = progress.rounds if resumed is not None else None
        device = resolve_xgboost_device(job.config, job.log)
        started = time.perf_counter()
        if booster is None or (
            parsed.n_estimators > progress.rounds and not progress.stopped_early
        ):
            tracker = RoundTracker(
                progress=progress,
                metrics=OBJECTIVES[job.schema.task][1],
                patience=_patience(parsed, job.config),
                total_rounds=parsed.n_estimators,
                log=job.log,
                on_epoch_end=job.on_epoch_end,
                checkpoint=checkpoint,
                checkpoint_every=self.checkpoint_every,
                max_seconds=job.config.max_seconds,
                started_at=time.time() if job.config.started_at is None else job.config.started_at,
                score_validation=_validation_scorer(job, arrays),
                train_rows=len(arrays["y_train"]),
            )
            run_params = {**booster_params, "device": device}
            if job.config.num_threads is not None:
                run_params["nthread"] = job.config.num_threads
            booster = _boost(run_params, parsed, arrays, booster, tracker, job.log)
        else:
            job.log(
                f"the checkpoint's run is complete ({progress.rounds} rounds); nothing to train"
            )
        rows = len(arrays["y_train"]) * (progress.rounds - (resumed_from or 0))
        seconds = time.perf_counter() - started
        model = _fitted_model(booster, preprocessor, parsed, booster_params, progress.best_round)
        return FitResult(
            model=model,
            history=list(progress.history),
            best_epoch=progress.best_round,
            epochs_run=progress.rounds,
            resumed_from_epoch=resumed_from,
            samples_per_second=rows / seconds if seconds > 0 else 0.0,
            device=device,
            stopped_early=progress.stopped_early,
        )

    def load(self, directory: str | Path) -> XGBoostModel:
        """Loads a model saved by `XGBoostModel.save`, without pickle.

        Args:
            directory: Holds ``model.json`` and ``model.ubj``.

        Returns:
            The model, predicting on the CPU.
        """
        return XGBoostModel.load(directory)


FLAVOR = XGBoostFlavor()
