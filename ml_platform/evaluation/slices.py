"""Metrics per value of each slice column (region, channel...), for fairness gates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_platform.evaluation.metrics import compute_metrics

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def slice_metrics(
    task: str,
    frame: pd.DataFrame,
    y_true: np.ndarray,
    prediction: np.ndarray,
    slice_columns: list[str],
    threshold: float = 0.5,
    min_rows: int = 30,
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of each slice column: ``{column: {value: metrics}}``.

    Slices with fewer than ``min_rows`` rows are reported with their row count only: their metrics
    would be noise. Missing values form their own slice, ``"<null>"``.

    Args:
        task: the model's task (see :func:`~ml_platform.evaluation.metrics.compute_metrics`).
        frame: the evaluated rows, holding every column of ``slice_columns``.
        y_true: the labels of ``frame``'s rows, in order.
        prediction: the predictions of ``frame``'s rows, in order.
        slice_columns: the columns to slice by.
        threshold: the binary decision threshold.
        min_rows: the fewest rows a slice needs for its metrics to be computed.

    Returns:
        Column name to slice value (as a string) to that slice's metrics.
    """
    import numpy as np

    result: dict[str, dict[str, dict[str, float]]] = {}
    for column in slice_columns:
        values = frame[column].astype("string").fillna("<null>").to_numpy()
        per_value: dict[str, dict[str, float]] = {}
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() < min_rows:
                per_value[str(value)] = {"rows": float(mask.sum())}
                continue
            part = prediction[mask] if np.ndim(prediction) == 1 else prediction[mask, :]
            per_value[str(value)] = compute_metrics(task, y_true[mask], part, threshold)
        result[column] = per_value
    return result
