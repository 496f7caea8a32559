"""Task-appropriate metrics of one set of predictions (scikit-learn, imported when called)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# Probabilities are clipped away from 0 and 1 so that log loss stays finite.
_EPSILON = 1e-7


def expected_calibration_error(
    y_true: np.ndarray, probability: np.ndarray, bins: int = 10
) -> float:
    """Weighted mean gap between predicted probability and observed rate over equal-width bins.

    Args:
        y_true: the 0/1 labels.
        probability: the predicted probability of class 1, one per label.
        bins: the number of equal-width probability bins over [0, 1].

    Returns:
        The expected calibration error (ECE), 0 for a perfectly calibrated model.
    """
    import numpy as np

    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    predicted = np.bincount(which, weights=probability, minlength=bins)
    observed = np.bincount(which, weights=y_true, minlength=bins)
    occupied = counts > 0
    gaps = np.abs(predicted[occupied] - observed[occupied]) / counts[occupied]
    return float(np.sum(gaps * counts[occupied]) / max(len(y_true), 1))


def compute_metrics(
    task: str, y_true: np.ndarray, prediction: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Metrics for one set of predictions.

    Binary: roc_auc, pr_auc, precision/recall/f1/accuracy at ``threshold``, log_loss,
    calibration_error (ECE), positive_rate. Multiclass: accuracy, macro_f1, log_loss.
    Regression: rmse, mae, r2. Metrics undefined on the data (AUC with one class) are NaN.

    Args:
        task: ``binary_classification``, ``multiclass_classification`` or ``regression``.
        y_true: the labels, encoded as the model's ``encode_labels`` returns them.
        prediction: P(class 1) of shape (N,) for binary, (N, C) class probabilities for
            multiclass, values in label units for regression.
        threshold: the probability at or above which a binary prediction counts as positive.

    Returns:
        Metric name to value, always with ``rows``; only ``rows`` when there are no rows.
    """
    import numpy as np

    y_true = np.asarray(y_true)
    result: dict[str, float] = {"rows": float(len(y_true))}
    if len(y_true) == 0:
        return result
    if task == "binary_classification":
        result |= _binary_metrics(y_true, prediction, threshold)
    elif task == "multiclass_classification":
        result |= _multiclass_metrics(y_true, prediction)
    else:
        result |= _regression_metrics(y_true, prediction)
    return {name: float(value) for name, value in result.items()}


def _binary_metrics(y_true: np.ndarray, prediction: np.ndarray, threshold: float) -> dict[str, Any]:
    import numpy as np
    from sklearn import metrics

    probability = np.clip(np.asarray(prediction, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    predicted = (probability >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        y_true,
        predicted,
        average="binary",
        zero_division=0.0,  # pyright: ignore[reportArgumentType]
    )
    return {
        "roc_auc": metrics.roc_auc_score(y_true, probability) if both_classes else math.nan,
        "pr_auc": metrics.average_precision_score(y_true, probability)
        if both_classes
        else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": metrics.accuracy_score(y_true, predicted),
        "log_loss": metrics.log_loss(y_true, probability, labels=[0, 1]),
        "calibration_error": expected_calibration_error(y_true, probability),
        "positive_rate": float(np.mean(y_true)),
    }


def _multiclass_metrics(y_true: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    import numpy as np
    from sklearn import metrics

    probability = np.asarray(prediction, dtype=np.float64)
    predicted = probability.argmax(axis=1)
    return {
        "accuracy": metrics.accuracy_score(y_true, predicted),
        "macro_f1": metrics.f1_score(
            y_true,
            predicted,
            average="macro",
            zero_division=0.0,  # pyright: ignore[reportArgumentType]
        ),
        "log_loss": metrics.log_loss(
            y_true, np.clip(probability, _EPSILON, 1), labels=list(range(probability.shape[1]))
        ),
    }


def _regression_metrics(y_true: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    import numpy as np
    from sklearn import metrics

    predicted = np.asarray(prediction, dtype=np.float64)
    return {
        "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, predicted))),
        "mae": metrics.mean_absolute_error(y_true, predicted),
        "r2": metrics.r2_score(y_true, predicted) if len(y_true) > 1 else math.nan,
    }
