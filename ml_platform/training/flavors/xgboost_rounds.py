"""Boosting rounds of the XGBoost flavor: history, early stopping, divergence and checkpoints.

`RoundTracker.after_round` runs after every round (through an xgboost `TrainingCallback`), the
way the torch loop ends each epoch: it records the losses, stops early, calls `on_epoch_end`,
writes the checkpoint and, past the training budget, checkpoints and stops the fit. A checkpoint
is one UBJSON booster whose attribute holds the run's state and fingerprint, so
one atomic write keeps trees and state consistent.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_platform.core.storage import write_atomically
from ml_platform.training.budget import budget_exhausted, check_budget
from ml_platform.training.checkpoint import FINGERPRINT_ROWS, fingerprint_of
from ml_platform.training.flavors.base import EpochCallback, LogFunction
from ml_platform.training.progress import progress_suffix
from ml_platform.training.schema import TrainingDivergedError

if TYPE_CHECKING:
    import xgboost
    from xgboost.callback import TrainingCallback

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_FILENAME = "xgboost-last.ubj"
# The run's state rides in the checkpoint's booster, so one atomic file holds all of it.
CHECKPOINT_ATTRIBUTE = "ml_platform_checkpoint"


@dataclass
class RoundProgress:
    """What a checkpoint carries besides the trees: the history and the early-stopping state.

    Attributes:
        history: One dict per round: epoch (the 1-based round), train_loss, validation_loss and,
            for classification, validation_accuracy.
        best_loss: The lowest validation loss so far.
        best_round: The 1-based round that reached it.
        rounds_without_improvement: Rounds since then.
        stopped_early: Whether early stopping ended the run.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    best_round: int = 0
    rounds_without_improvement: int = 0
    stopped_early: bool = False

    @property
    def rounds(self) -> int:
        """Rounds completed."""
        return len(self.history)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable fields; `RoundProgress(**progress.to_dict())` restores it."""
        return {
            "history": self.history,
            "best_loss": self.best_loss,
            "best_round": self.best_round,
            "rounds_without_improvement": self.rounds_without_improvement,
            "stopped_early": self.stopped_early,
        }


@dataclass
class BoosterCheckpoint:
    """``<checkpoint_dir>/xgboost-last.ubj``: the booster with the run's state as an attribute.

    Attributes:
        path: The checkpoint file.
        fields: This run's `fingerprint_fields`; a checkpoint of other fields is not resumed.
    """

    path: Path
    fields: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """A short hash of `fields`."""
        return fingerprint_of(self.fields)

    def save(self, booster: xgboost.Booster, progress: RoundProgress) -> None:
        """Writes the booster and progress atomically: a reader sees this checkpoint or the last."""
        state = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "fingerprint_fields": self.fields,
            "progress": progress.to_dict(),
        }
        booster.set_attr(**{CHECKPOINT_ATTRIBUTE: json.dumps(state)})
        try:
            raw = bytes(booster.save_raw(raw_format="ubj"))
        finally:
            booster.set_attr(**{CHECKPOINT_ATTRIBUTE: None})
        write_atomically(self.path, lambda path: path.write_bytes(raw))

    def load(self, log: LogFunction) -> tuple[xgboost.Booster, RoundProgress] | None:
        """The checkpoint's booster and progress when it belongs to this run, else None."""
        import xgboost

        if not self.path.exists():
            return None
        try:
            booster = xgboost.Booster()
            booster.load_model(bytearray(self.path.read_bytes()))
            state = json.loads(booster.attr(CHECKPOINT_ATTRIBUTE) or "null")
        except Exception as error:  # any unreadable checkpoint means a fresh start
            log(
                f"checkpoint {self.path} could not be read ({type(error).__name__}: {error}); "
                "starting fresh"
            )
            return None
        if not isinstance(state, dict) or state.get("format_version") != (
            CHECKPOINT_FORMAT_VERSION
        ):
            log(f"checkpoint {self.path} has an unknown format; starting fresh")
            return None
        if state.get("fingerprint") != self.fingerprint:
            old = state.get("fingerprint_fields", {})
            changed = sorted(k for k in {*old, *self.fields} if old.get(k) != self.fields.get(k))
            log(
                f"checkpoint {self.path} belongs to a different run (changed: "
                f"{', '.join(changed) or 'fingerprint'}); starting fresh"
            )
            return None
        progress = RoundProgress(**state["progress"])
        if progress.rounds != booster.num_boosted_rounds() or progress.rounds == 0:
            log(
                f"checkpoint {self.path} holds {booster.num_boosted_rounds()} rounds but a history "
                f"of {progress.rounds}; starting fresh"
            )
            return None
        booster.set_attr(**{CHECKPOINT_ATTRIBUTE: None})
        log(f"resuming from checkpoint at round {progress.rounds}")
        return booster, progress


@dataclass
class RoundTracker:
    """Called after every boosting round: history, divergence, early stopping, callbacks."""

    progress: RoundProgress
    metrics: tuple[str, ...]
    patience: int
    total_rounds: int
    log: LogFunction
    on_epoch_end: EpochCallback | None
    checkpoint: BoosterCheckpoint | None
    checkpoint_every: int
    saved_round: int = 0
    # The training budget (`TrainingConfig.max_seconds`) and when its clock started.
    max_seconds: float | None = None
    started_at: float = field(default_factory=time.time)
    # Measures the primary metric of the booster so far on the validation split: only on the
    # rounds that are logged (a chunk of rounds), as a prediction costs a pass over all trees.
    score_validation: Callable[[xgboost.Booster], dict[str, float]] | None = None
    train_rows: int = 0
    # This fit's clock and the rounds done before it (resumed), for throughput and the ETA.
    clock_started: float = field(default_factory=time.perf_counter)
    first_round: int = 0

    def __post_init__(self) -> None:
        self.first_round = self.progress.rounds

    def after_round(self, booster: xgboost.Booster, evals_log: Mapping[str, Any]) -> bool:
        """Records the round just boosted; returns True to stop boosting."""
        progress = self.progress
        round_number = progress.rounds + 1
        loss_metric, error_metrics = self.metrics[0], self.metrics[1:]
        train_loss = float(evals_log["train"][loss_metric][-1])
        validation_loss = float(evals_log["validation"][loss_metric][-1])
        if not math.isfinite(validation_loss):
            raise TrainingDivergedError(
                f"validation loss is {validation_loss} at round {round_number} (train loss "
                f"{train_loss}); lower model.params.learning_rate"
            )
        improved = validation_loss < progress.best_loss
        if improved:
            progress.best_loss, progress.best_round = validation_loss, round_number
            progress.rounds_without_improvement = 0
        else:
            progress.rounds_without_improvement += 1
        metrics = {
            "epoch": float(round_number),
            "train_loss": train_loss,
            "validation_loss": validation_loss,
        }
        for error_metric in error_metrics:  # "error" or "merror": 1 - accuracy at 0.5
            metrics["validation_accuracy"] = 1.0 - float(evals_log["validation"][error_metric][-1])
        if self.patience > 0 and progress.rounds_without_improvement >= self.patience:
            progress.stopped_early = True
        logged = self._logged(round_number)
        if logged and self.score_validation is not None:
            metrics.update(self.score_validation(booster))
        progress.history.append(metrics)
        if logged:
            self._log_round(round_number, metrics, improved)
        if self.on_epoch_end is not None:
            self.on_epoch_end(round_number, dict(metrics))
        if self.checkpoint is not None and round_number % self.checkpoint_every == 0:
            self.save(booster)
        if round_number < self.total_rounds and not progress.stopped_early:
            self._check_budget(booster, round_number)
        return progress.stopped_early

    def _check_budget(self, booster: xgboost.Booster, round_number: int) -> None:
        """Past the budget: checkpoint this round, then stop the fit for good."""
        if not budget_exhausted(self.max_seconds, self.started_at):
            return
        self.save(booster)
        check_budget(
            self.max_seconds,
            self.started_at,
            completed=round_number,
            total=self.total_rounds,
            unit="round",
        )

    def save(self, booster: xgboost.Booster) -> None:
        """Writes the checkpoint unless this round's is already on disk."""
        if self.checkpoint is not None and self.saved_round != self.progress.rounds:
            self.checkpoint.save(booster, self.progress)
            self.saved_round = self.progress.rounds

    def _logged(self, round_number: int) -> bool:
        """Whether this round ends a chunk of rounds: the first, every 5%, the last one."""
        every = max(1, self.total_rounds // 20)
        return (
            round_number in (1, self.total_rounds)
            or round_number % every == 0
            or self.progress.stopped_early
        )

    def _log_round(self, round_number: int, metrics: dict[str, float], improved: bool) -> None:
        progress = self.progress
        done = round_number - self.first_round
        elapsed = time.perf_counter() - self.clock_started
        remaining = 0 if progress.stopped_early else self.total_rounds - round_number
        values = " ".join(f"{k}={v:.6g}" for k, v in metrics.items() if k != "epoch")
        best = " (best)" if improved else ""
        rows_per_second = self.train_rows * done / max(elapsed, 1e-9)
        suffix = progress_suffix(rows_per_second, elapsed, done, remaining)
        self.log(f"round {round_number}/{self.total_rounds}: {values}{best}; {suffix}")
        if progress.stopped_early:
            self.log(
                f"early stopping after round {round_number}: validation_loss has not improved "
                f"for {self.patience} rounds (best {progress.best_loss:.6g} at round "
                f"{progress.best_round})"
            )


def round_callback(tracker: RoundTracker) -> TrainingCallback:
    """An xgboost training callback that hands every finished round to ``tracker``."""
    from xgboost.callback import TrainingCallback

    # Defined here so that importing this module does not import xgboost.
    class RoundCallback(TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            return tracker.after_round(model, evals_log)

    return RoundCallback()


def _digest(array: np.ndarray) -> str:
    rows = array.shape[0]
    if rows > FINGERPRINT_ROWS:
        array = array[np.linspace(0, rows - 1, FINGERPRINT_ROWS).astype(np.int64)]
    return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


def fingerprint_fields(
    booster_params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """What decides the trees, and so whether a checkpoint may be resumed.

    Left out, as the torch trainer does with epochs and patience: n_estimators (more rounds
    extend a run), early stopping, the device and the threads (speed, not the trees).

    Args:
        booster_params: The booster's parameters without device and threads.
        arrays: The encoded splits by name; their shapes, dtypes and digests count.

    Returns:
        JSON-serializable fields, saved in the checkpoint to explain a mismatch.
    """
    fields: dict[str, Any] = {"flavor": "xgboost", **booster_params}
    for name, array in arrays.items():
        fields[f"{name}_shape"] = list(array.shape)
        fields[f"{name}_dtype"] = str(array.dtype)
        fields[f"{name}_digest"] = _digest(array)
    return fields
