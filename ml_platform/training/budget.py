"""The training step's wall-clock budget: checked after each epoch or boosting round.

A fit that runs past ``TrainingConfig.max_seconds`` stops after writing its checkpoint and raises
`TrainingBudgetExceeded`, so nothing is registered and a later run with a larger budget resumes
where it stopped. Torch-free: the Dagster asset imports the error to fail the step for good.
"""

from __future__ import annotations

import time


class TrainingBudgetExceeded(RuntimeError):
    """Training ran past its time budget; the checkpoint of the last finished epoch is kept.

    Attributes:
        max_seconds: The budget.
        elapsed_seconds: How long training had run when it stopped.
        completed: Epochs (or boosting rounds) finished, resumed ones included.
        total: Epochs (or rounds) the fit would have run.
        unit: "epoch" or "round".
    """

    def __init__(
        self, *, max_seconds: float, elapsed_seconds: float, completed: int, total: int, unit: str
    ) -> None:
        self.max_seconds = max_seconds
        self.elapsed_seconds = elapsed_seconds
        self.completed = completed
        self.total = total
        self.unit = unit
        super().__init__(
            f"training stopped after {unit} {completed} of {total}: it had run "
            f"{elapsed_seconds:.0f} s, past its budget of {max_seconds:g} s "
            f"(training.max_duration, else the compute profile's max_runtime_seconds); nothing "
            f"was registered and the checkpoint of {unit} {completed} is kept. Raise "
            f"training.max_duration (or lower training.epochs / model.params.n_estimators, or "
            f"choose a faster compute profile): the next run resumes from that checkpoint"
        )


def check_budget(
    max_seconds: float | None,
    started_at: float,
    *,
    completed: int,
    total: int,
    unit: str,
    now: float | None = None,
) -> None:
    """Raise when training has run past its budget.

    Args:
        max_seconds: The budget; None means no budget.
        started_at: When the budget's clock started (``time.time()``; shared by processes).
        completed: Epochs or rounds finished so far.
        total: Epochs or rounds the fit would run.
        unit: "epoch" or "round", for the message.
        now: The current time; defaults to ``time.time()``.

    Raises:
        TrainingBudgetExceeded: More than ``max_seconds`` passed since ``started_at``.
    """
    if max_seconds is None:
        return
    elapsed = (time.time() if now is None else now) - started_at
    if elapsed > max_seconds:
        raise TrainingBudgetExceeded(
            max_seconds=max_seconds,
            elapsed_seconds=elapsed,
            completed=completed,
            total=total,
            unit=unit,
        )


def budget_exhausted(max_seconds: float | None, started_at: float) -> bool:
    """Whether more than ``max_seconds`` passed since ``started_at`` (never when None).

    Args:
        max_seconds: The budget; None means no budget.
        started_at: When the budget's clock started (``time.time()``).

    Returns:
        True once the budget is spent.
    """
    return max_seconds is not None and time.time() - started_at > max_seconds
