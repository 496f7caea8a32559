"""The stored evaluation of one model version (``<model>/evaluation``'s current record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ml_platform.evaluation.gates import GateResult

# Fields that reports stored by earlier versions may hold and this one no longer has.
_RETIRED_FIELDS = frozenset({"extra"})


@dataclass(frozen=True)
class EvaluationReport:
    """The evaluation of one model version, and of the champion on the same test rows.

    Attributes:
        model: the model (spec) name.
        version: the evaluated registry version.
        snapshot_id: the training set snapshot whose test split was scored.
        primary_metric: the spec's primary metric.
        metrics: the version's test metrics.
        slices: the version's metrics per slice column and value.
        champion_version: the champion when the evaluation ran, if any.
        champion_metrics: the champion's metrics on the same rows, if it could be evaluated.
        champion_slices: the champion's per-slice metrics on the same rows.
        gates: the gate results, as dictionaries (``GateResult`` fields), in gate order.
        threshold: the decision threshold the classification metrics used (binary).
        plots: the evaluation's pictures, name to PNG path (``evaluation.plots``).
    """

    model: str
    version: str
    snapshot_id: str
    primary_metric: str
    metrics: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]]
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    champion_slices: dict[str, dict[str, dict[str, float]]] | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    threshold: float | None = None
    plots: dict[str, str] = field(default_factory=dict)

    def gate_results(self) -> list[GateResult]:
        """The gate results as ``GateResult`` objects, in gate order."""
        return [GateResult(**gate) for gate in self.gates]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (what is stored and logged to MLflow)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        """The report stored as ``data`` by :meth:`to_dict`, of this or an earlier version.

        Args:
            data: a stored report; retired fields of older reports (``extra``) are ignored.

        Returns:
            The report.

        Raises:
            TypeError: ``data`` lacks a required field or holds one no report ever had.
        """
        return cls(**{key: value for key, value in data.items() if key not in _RETIRED_FIELDS})
