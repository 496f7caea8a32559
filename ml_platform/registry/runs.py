"""An MLflow run of one training: a link to it and its per-epoch metrics, sent in one request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class TrainingRun:
    """An active MLflow run for one training.

    Attributes:
        client: The registry's MLflow client.
        run_id: The MLflow run id.
        experiment_id: The id of the model's experiment.
        url: A link to the run in the MLflow UI.
    """

    client: MlflowClient
    run_id: str
    experiment_id: str
    url: str

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics in one request, skipping non-finite and non-numeric values.

        Args:
            epoch: The epoch number, logged as the metrics' step.
            metrics: Metric name to value; an ``epoch`` entry is skipped.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key=name, value=float(value), timestamp=now, step=epoch)
            for name, value in metrics.items()
            if name != "epoch" and isinstance(value, (int, float)) and math.isfinite(value)
        ]
        self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Log metrics at ``step`` (see ``log_epoch``).

        Args:
            metrics: Metric name to value.
            step: The step to log them at.
        """
        self.log_epoch(step, metrics)
