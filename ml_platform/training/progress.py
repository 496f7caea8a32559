"""Per-epoch progress: the validation primary metric, throughput and time left.

Only numpy is imported here: the trainers that use it also run on GPU images without pandas or
scikit-learn. The metrics are therefore computed here with numpy, by the same definitions as
``ml_platform.evaluation.metrics`` (tests/unit/test_progress.py compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Probabilities are clipped away from 0 and 1 so that log loss stays finite (as in evaluation).
_EPSILON = 1e-7
# The validation metric is measured on at most this many rows (evenly spaced): a few hundred
# milliseconds per epoch, whatever the size of the validation split.
MAX_METRIC_ROWS = 200_000

ValidationScorer = Callable[[np.ndarray], dict[str, float]]
"""Maps predictions on the validation split to ``{"val_<metric>": value}`` (empty: unknown)."""


def validation_metric_name(metric: str) -> str:
    """The history key and MLflow metric of a metric measured on the validation split.

    Args:
        metric: The spec's primary metric, e.g. ``roc_auc``.

    Returns:
        ``val_<metric>``.
    """
    return f"val_{metric}"


def primary_metric_scorer(
    task: str, metric: str | None, threshold: float, truth: np.ndarray
) -> ValidationScorer | None:
    """A function measuring ``metric`` of validation predictions, cheaply, once per epoch.

    Args:
        task: ``binary_classification``, ``multiclass_classification`` or ``regression``.
        metric: The spec's primary metric; None measures nothing.
        threshold: The binary decision threshold (for precision, recall, f1, accuracy).
        truth: The validation labels as ``compute_metrics`` expects them (0/1, class indices,
            values in the label's units).

    Returns:
        The scorer, or None when there is no metric to measure. It takes predictions as
        ``FittedModel.predict`` returns them and returns ``{"val_<metric>": value}``, empty when
        the metric is undefined on the rows (AUC of one class) or cannot be computed here.
    """
    if not metric:
        return None
    rows = len(truth)
    sample = (
        np.linspace(0, rows - 1, MAX_METRIC_ROWS).astype(np.int64)
        if rows > MAX_METRIC_ROWS
        else np.arange(rows)
    )
    sampled_truth = np.asarray(truth)[sample]
    name = validation_metric_name(metric)

    def score(prediction: np.ndarray) -> dict[str, float]:
        value = measure_metric(
            task, metric, sampled_truth, np.asarray(prediction)[sample], threshold
        )
        return {name: value} if value is not None and math.isfinite(value) else {}

    return score


def format_duration(seconds: float) -> str:
    """A duration for a progress line: ``45s``, ``3m05s`` or ``2h07m``.

    Args:
        seconds: The duration; negative counts as zero.

    Returns:
        The duration, rounded to the second.
    """
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def progress_suffix(
    rows_per_second: float, elapsed_seconds: float, done: int, remaining: int
) -> str:
    """Throughput and estimated time left, for the end of an epoch's (or rounds') log line.

    Args:
        rows_per_second: Training rows per second of the last epoch (or rounds).
        elapsed_seconds: Wall-clock time since this fit started training, validation included.
        done: Epochs (rounds) completed in that time.
        remaining: Epochs (rounds) left at most (early stopping may end sooner).

    Returns:
        E.g. ``"52,310 rows/s, ETA 1m05s"``; ``ETA 0s`` when nothing is left.
    """
    per_unit = elapsed_seconds / done if done > 0 else 0.0
    return f"{rows_per_second:,.0f} rows/s, ETA {format_duration(per_unit * remaining)}"


def measure_metric(
    task: str, metric: str, truth: np.ndarray, prediction: np.ndarray, threshold: float = 0.5
) -> float | None:
    """One evaluation metric of predictions, with numpy only.

    Args:
        task: ``binary_classification``, ``multiclass_classification`` or ``regression``.
        metric: One of the task's metrics (``ml_platform.core.tasks.TASK_METRICS``).
        truth: 0/1 labels, class indices, or values in the label's units.
        prediction: P(class 1) (N,), class probabilities (N, C), or values (N,).
        threshold: The binary decision threshold.

    Returns:
        The value (NaN where undefined, e.g. AUC of one class), or None for a metric this
        function does not measure (``calibration_error``, ``positive_rate``).
    """
    truth = np.asarray(truth)
    if len(truth) == 0:
        return None
    if task == "regression":
        return _regression_metric(metric, truth.astype(np.float64), prediction.astype(np.float64))
    if task == "multiclass_classification":
        return _multiclass_metric(metric, truth.astype(np.int64), prediction.astype(np.float64))
    probability = np.clip(prediction.astype(np.float64), _EPSILON, 1 - _EPSILON)
    return _binary_metric(metric, truth.astype(np.int64), probability, threshold)


def _binary_metric(
    metric: str, truth: np.ndarray, probability: np.ndarray, threshold: float
) -> float | None:
    if metric == "roc_auc":
        return _roc_auc(truth, probability)
    if metric == "pr_auc":
        return _average_precision(truth, probability)
    if metric == "log_loss":
        return float(-np.mean(truth * np.log(probability) + (1 - truth) * np.log(1 - probability)))
    predicted = (probability >= threshold).astype(np.int64)
    if metric == "accuracy":
        return float(np.mean(predicted == truth))
    true_positives = float(np.sum((predicted == 1) & (truth == 1)))
    precision = true_positives / max(float(predicted.sum()), 1.0)
    recall = true_positives / max(float(truth.sum()), 1.0)
    if metric == "precision":
        return precision
    if metric == "recall":
        return recall
    if metric == "f1":
        return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return None


def _roc_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """The Mann-Whitney statistic: tied scores share their average rank."""
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    values, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    del values
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    return float(
        (ranks[truth == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def _average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    """Precision at each distinct threshold, weighted by the recall it adds (as scikit-learn)."""
    positives = int(truth.sum())
    if positives == 0 or positives == len(truth):
        return math.nan
    order = np.argsort(-score, kind="mergesort")
    ordered, labels = score[order], truth[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]
    true_positives = np.cumsum(labels)[last_of_each]
    precision = true_positives / (last_of_each + 1)
    recall = true_positives / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _multiclass_metric(metric: str, truth: np.ndarray, probability: np.ndarray) -> float | None:
    predicted = probability.argmax(axis=1)
    if metric == "accuracy":
        return float(np.mean(predicted == truth))
    if metric == "log_loss":
        chosen = np.clip(probability[np.arange(len(truth)), truth], _EPSILON, 1.0)
        return float(-np.mean(np.log(chosen)))
    if metric == "macro_f1":
        scores = []
        for label in np.union1d(truth, predicted):
            true_positives = float(np.sum((predicted == label) & (truth == label)))
            wrong = float(np.sum(predicted == label) + np.sum(truth == label)) - 2 * true_positives
            total = 2 * true_positives + wrong
            scores.append(2 * true_positives / total if total > 0 else 0.0)
        return float(np.mean(scores))
    return None


def _regression_metric(metric: str, truth: np.ndarray, predicted: np.ndarray) -> float | None:
    error = predicted - truth
    if metric == "rmse":
        return float(np.sqrt(np.mean(error**2)))
    if metric == "mae":
        return float(np.mean(np.abs(error)))
    if metric == "r2":
        spread = float(np.sum((truth - truth.mean()) ** 2))
        return 1.0 - float(np.sum(error**2)) / spread if len(truth) > 1 and spread > 0 else math.nan
    return None
