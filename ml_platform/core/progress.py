"""Progress of a long step: each phase logged as it ends, with its time and throughput."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

_LOGGER = logging.getLogger("ml_platform")


class Phases:
    """Logs the phases of one step as they end: ``training set: joined 3 views in 4.2 s (...)``.

    Args:
        step: What the lines are about, e.g. ``training set fraud_detection``.
        log: Receives each line (an asset passes ``context.log.info``); default: the
            ``ml_platform`` logger.
    """

    def __init__(self, step: str, log: Callable[[str], None] | None = None) -> None:
        self.step = step
        self.log = log or _LOGGER.info
        self.started = self._last = time.perf_counter()

    def done(self, what: str, rows: int | None = None) -> float:
        """Log that a phase ended, with its duration and, given ``rows``, its throughput.

        Args:
            what: What the phase did, in the past tense.
            rows: Rows the phase processed, if counted.

        Returns:
            The phase's duration in seconds.
        """
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        line = f"{self.step}: {what} in {seconds:.1f} s"
        if rows is not None:
            line += f" ({rows:,} rows, {rows / max(seconds, 1e-9):,.0f} rows/s)"
        self.log(line)
        return seconds

    def total(self) -> float:
        """Seconds since the step started."""
        return time.perf_counter() - self.started
