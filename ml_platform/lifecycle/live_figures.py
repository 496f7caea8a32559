"""The canary's live figures beside the champion's, and the decision taken on them.

``RoleFigures`` holds one role's calls since the canary started; ``CanaryFigures`` puts the
canary's beside the champion's (``lifecycle.canary.measure_canary`` measures them) and
``CanaryDecision`` says promote, roll back or wait, and why (``lifecycle.canary.decide_canary``).
They are plain data, so ``lifecycle.deploy`` records them without measuring anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ml_platform.core.helpers import JsonDataclass
from ml_platform.core.tasks import higher_is_better

CANARY = "canary"
CHAMPION = "champion"

CanaryAction = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class RoleFigures(JsonDataclass):
    """One role's live calls since the canary started.

    Attributes:
        role: ``canary`` or ``champion``.
        version: The version answering in that role.
        calls: Calls it answered (any status).
        errors: Those answered with a 5xx status.
        p50_latency_ms: Median latency, None without calls.
        p99_latency_ms: 99th percentile latency, None without calls.
        labelled_calls: Successful calls whose label has arrived.
        metric_value: The primary metric on the labelled calls, None when not computable.
    """

    role: str
    version: str | None
    calls: int = 0
    errors: int = 0
    p50_latency_ms: float | None = None
    p99_latency_ms: float | None = None
    labelled_calls: int = 0
    metric_value: float | None = None

    @property
    def error_rate(self) -> float | None:
        """The share of calls answered with a 5xx status; None without calls."""
        return self.errors / self.calls if self.calls else None


@dataclass(frozen=True)
class CanaryFigures(JsonDataclass):
    """The canary's live figures beside the champion's, over the same time.

    Attributes:
        model: The model.
        canary: The canary's calls.
        champion: The champion's calls.
        share: The canary's traffic share.
        since: When the canary started (ISO 8601, UTC).
        measured_at: The end of the measured time (ISO 8601, UTC).
        metric: The primary metric.
        prediction_shift: Jensen-Shannon distance (natural log, as Evidently's drift test)
            between the canary's and the champion's score distributions; None without scores.
        notes: What could not be measured, and why.
    """

    model: str
    canary: RoleFigures
    champion: RoleFigures
    share: float
    since: str
    measured_at: str
    metric: str
    prediction_shift: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def running_for(self) -> timedelta:
        """How long the canary had run when measured."""
        return datetime.fromisoformat(self.measured_at) - datetime.fromisoformat(self.since)

    @property
    def latency_ratio(self) -> float | None:
        """The canary's p99 latency over the champion's; None when either is unknown."""
        canary, champion = self.canary.p99_latency_ms, self.champion.p99_latency_ms
        if canary is None or champion is None:
            return None
        return canary / champion if champion > 0 else math.inf

    @property
    def performance_drop(self) -> float | None:
        """How much worse the canary's metric is than the champion's (positive = worse)."""
        canary, champion = self.canary.metric_value, self.champion.metric_value
        if canary is None or champion is None:
            return None
        return champion - canary if higher_is_better(self.metric) else canary - champion

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryFigures:
        """Read what ``to_dict`` wrote."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for role in (CANARY, CHAMPION):
            values[role] = RoleFigures.from_dict(values[role])
        return cls(**values)

    def table(self) -> list[dict[str, Any]]:
        """One row per role: version, calls, error rate, latency, labelled calls, metric."""
        return [
            {
                "role": figures.role,
                "version": figures.version,
                "calls": figures.calls,
                "error_rate": _rounded(figures.error_rate, 4),
                "p50_latency_ms": _rounded(figures.p50_latency_ms, 2),
                "p99_latency_ms": _rounded(figures.p99_latency_ms, 2),
                "labelled_calls": figures.labelled_calls,
                self.metric: _rounded(figures.metric_value, 4),
            }
            for figures in (self.canary, self.champion)
        ]


@dataclass(frozen=True)
class CanaryDecision(JsonDataclass):
    """What to do with the canary, and why (one sentence per bound: measured against bound).

    Attributes:
        action: ``promote``, ``rollback`` or ``wait``.
        reasons: Why; the broken bounds first on a rollback.
    """

    action: CanaryAction
    reasons: list[str]


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)
