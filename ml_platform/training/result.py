"""What a training run reports besides the model: one definition for every trainer and flavor."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(kw_only=True)
class TrainingFacts:
    """The facts of one training run.

    Attributes:
        history: One dict per completed epoch (a boosting round for trees), resumed ones
            included: epoch, train_loss, validation_loss, validation_accuracy for
            classification, and ``val_<metric>`` when the config names a primary metric
            (XGBoost measures it on the logged rounds only: the first, every 5%, the last).
        best_epoch: The epoch (1-based) whose state the model has.
        epochs_run: Epochs completed in total, resumed ones included.
        resumed_from_epoch: Last completed epoch of the checkpoint resumed from, else None.
        samples_per_second: Training rows per second of training in this call, validation and
            checkpointing excluded; 0.0 when no epoch ran.
        device: The device trained on, e.g. "cuda:0".
        stopped_early: Whether early stopping ended training.
    """

    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int | None
    samples_per_second: float
    device: str
    stopped_early: bool = False


# Every fact by name: what the torchrun worker writes to its result file and the parent reads back.
RESULT_FIELDS: tuple[str, ...] = tuple(item.name for item in fields(TrainingFacts))
