"""Training progress: the validation primary metric per epoch (per chunk of boosting rounds),
throughput and ETA in the step log, and the metric equal to what evaluation measures."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ml_platform.core.tasks import TASK_METRICS
from ml_platform.evaluation.metrics import compute_metrics
from ml_platform.training.config import TrainingConfig
from ml_platform.training.flavors.torch import FLAVOR as TORCH
from ml_platform.training.flavors.xgboost import XGBoostFlavor, XGBoostModel
from ml_platform.training.progress import (
    format_duration,
    measure_metric,
    primary_metric_scorer,
    progress_suffix,
)
from ml_platform.training.schema import FeatureSchema

SCHEMAS = {
    "binary_classification": ("label", "roc_auc"),
    "multiclass_classification": ("species", "macro_f1"),
    "regression": ("price", "rmse"),
}
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): .* [\d,]+ rows/s, ETA (\d+h\d\dm|\d+m\d\ds|\d+s)$")


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(0.0, 1.0, rows)
    channel = rng.choice(["web", "app", "store"], rows)
    score = 2.0 * amount + np.where(channel == "store", 1.5, 0.0) + rng.normal(0.0, 0.5, rows)
    return pd.DataFrame(
        {
            "amount": amount,
            "channel": channel,
            "label": (score > 0.5).astype(int),
            "species": np.select([score < -1.0, score < 1.0], ["cat", "dog"], "emu"),
            "price": 1000.0 + 50.0 * score,
        }
    )


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_frame(800, seed=1), make_frame(300, seed=2)


def schema(task: str) -> FeatureSchema:
    return FeatureSchema(
        numeric=("amount",),
        categorical=("channel",),
        label=SCHEMAS[task][0],
        task=task,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("task", list(SCHEMAS))
def test_each_epoch_logs_the_validation_primary_metric_throughput_and_eta(
    splits: tuple[pd.DataFrame, pd.DataFrame], task: str
) -> None:
    metric = SCHEMAS[task][1]
    lines: list[str] = []
    config = TrainingConfig(
        epochs=3, batch_size=64, device="cpu", early_stopping_patience=0, primary_metric=metric
    )

    result = TORCH.fit(*splits, schema(task), {"hidden_sizes": [8]}, config, log=lines.append)

    epochs = [match for line in lines if (match := EPOCH_LINE.match(line))]
    assert [(m[1], m[2]) for m in epochs] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert epochs[-1][3] == "0s"  # nothing left after the last epoch
    assert all(f" val_{metric}=" in m[0] for m in epochs)
    # The metric of the last epoch is the evaluation's metric of the model on those rows.
    validation = splits[1]
    final = compute_metrics(
        task, result.model.encode_labels(validation), result.model.predict(validation)
    )[metric]
    assert result.history[-1][f"val_{metric}"] == pytest.approx(final, rel=1e-4)


def test_no_primary_metric_measures_only_the_losses(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    config = TrainingConfig(epochs=1, batch_size=64, device="cpu")

    result = TORCH.fit(*splits, schema("binary_classification"), {"hidden_sizes": [8]}, config)

    assert not any(key.startswith("val_") for key in result.history[0])


def test_boosting_logs_the_metric_per_chunk_of_rounds(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    lines: list[str] = []
    config = TrainingConfig(device="cpu", early_stopping_patience=0, primary_metric="roc_auc")
    params = {"n_estimators": 40, "max_depth": 3}

    result = XGBoostFlavor().fit(
        *splits, schema("binary_classification"), params, config, log=lines.append
    )

    logged = [line for line in lines if line.startswith("round ")]
    # Rounds 1, then every 2nd (5% of 40): 21 lines with the metric, throughput and ETA.
    assert len(logged) == 21 and all(" rows/s, ETA " in line for line in logged)
    with_metric = [row["epoch"] for row in result.history if "val_roc_auc" in row]
    assert with_metric == [1.0, *range(2, 41, 2)]
    # Measured with every tree so far (the model predicts with the best round's).
    model = result.model
    assert isinstance(model, XGBoostModel)
    validation = splits[1]
    every_tree = model.booster.inplace_predict(model.preprocessor.transform(validation))
    final = compute_metrics(
        "binary_classification", model.encode_labels(validation), np.asarray(every_tree)
    )["roc_auc"]
    assert result.history[-1]["val_roc_auc"] == pytest.approx(final)


def _predictions(task: str, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if task == "binary_classification":
        truth = rng.integers(0, 2, rows)
        # Rounded: many tied scores, which the rank-based AUC must share out as scikit-learn does.
        return truth, np.round(np.clip(0.3 * truth + rng.uniform(0, 0.7, rows), 0, 1), 2)
    if task == "multiclass_classification":
        truth = rng.integers(0, 3, rows)
        logits = rng.normal(0, 1, (rows, 3)) + 1.5 * np.eye(3)[truth]
        return truth, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = rng.normal(100, 10, rows)
    return truth, truth + rng.normal(0, 3, rows)


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        (task, metric)
        for task, metrics in TASK_METRICS.items()
        for metric in sorted(metrics - {"calibration_error", "positive_rate"})
    ],
)
def test_the_trainers_numpy_metrics_equal_the_evaluations(task: str, metric: str) -> None:
    truth, prediction = _predictions(task, 2000, seed=len(metric))

    measured = measure_metric(task, metric, truth, prediction, threshold=0.4)

    expected = compute_metrics(task, truth, prediction, threshold=0.4)[metric]
    assert measured == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_metric_is_measured_on_a_bounded_sample_and_undefined_values_are_left_out() -> None:
    truth = np.zeros(10)
    score = primary_metric_scorer("binary_classification", "roc_auc", 0.5, truth)
    assert score is not None
    assert score(np.linspace(0.0, 1.0, 10)) == {}  # AUC of one class: undefined, not NaN
    assert primary_metric_scorer("regression", None, 0.5, truth) is None


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.2, "0s"), (59.6, "1m00s"), (65, "1m05s"), (7260, "2h01m")]
)
def test_durations_read_at_a_glance(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_the_eta_is_the_mean_time_per_epoch_times_the_epochs_left() -> None:
    assert progress_suffix(12345.6, 30.0, 3, 7) == "12,346 rows/s, ETA 1m10s"
    assert progress_suffix(100.0, 5.0, 0, 4).endswith("ETA 0s")
