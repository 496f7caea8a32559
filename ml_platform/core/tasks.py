"""Task logic in one place: the tasks, their metrics, and which metrics are lower-is-better."""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["binary_classification", "multiclass_classification", "regression"]
TASKS: tuple[str, ...] = get_args(Task)

Metric = Literal[
    "roc_auc",
    "pr_auc",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "log_loss",
    "calibration_error",
    "rmse",
    "mae",
    "r2",
    "macro_f1",
]
METRICS: tuple[str, ...] = get_args(Metric)
LOWER_IS_BETTER = frozenset({"log_loss", "calibration_error", "rmse", "mae"})
MULTICLASS_METRICS = frozenset({"accuracy", "macro_f1", "log_loss"})
REGRESSION_METRICS = frozenset({"rmse", "mae", "r2"})
TASK_METRICS: dict[str, frozenset[str]] = {
    # Binary classification has every metric but macro F1 and the regression ones.
    "binary_classification": frozenset(METRICS) - REGRESSION_METRICS - {"macro_f1"},
    "multiclass_classification": MULTICLASS_METRICS,
    "regression": REGRESSION_METRICS,
}
DEFAULT_PRIMARY_METRIC: dict[str, str] = {
    "binary_classification": "roc_auc",
    "multiclass_classification": "macro_f1",
    "regression": "rmse",
}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (AUC) rather than worse (RMSE)."""
    return metric not in LOWER_IS_BETTER
