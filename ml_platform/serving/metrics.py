"""The prediction service's Prometheus metrics, in a registry of its own per app.

``ml_platform_serving_latency_seconds`` (histogram) and ``ml_platform_serving_requests_total``
(counter, with the HTTP status) are labelled by model, version and role; calls answered before a
version was chosen (refused, malformed, unknown entity) carry version and role ``none``.
``ml_platform_serving_traffic_share`` says which versions serve and what share of the entities
each gets. ``ml_platform_serving_refused_version`` is 1 for a version the service will not switch
to (gates not passed, champion alias unexplained), with the reason, until that changes. No label
ever holds a caller's key; a model name the service does not serve is counted as ``unknown``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

NONE = "none"
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class ServingMetrics:
    """The service's metrics (prometheus_client, imported here: serving only).

    Attributes:
        registry: The app's own collector registry (two apps in one process never share).
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        labels = ("model", "version", "role")
        self._latency = Histogram(
            "ml_platform_serving_latency_seconds",
            "Time from a call's arrival to its answer, per answering version.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "ml_platform_serving_requests_total",
            "Calls answered, by version, role and HTTP status (errors included).",
            (*labels, "status"),
            registry=self.registry,
        )
        self._share = Gauge(
            "ml_platform_serving_traffic_share",
            "Share of the entities each served version answers.",
            labels,
            registry=self.registry,
        )
        self._refused = Gauge(
            "ml_platform_serving_refused_version",
            "1 for a version the service refuses to switch to, with the reason.",
            ("model", "version", "reason"),
            registry=self.registry,
        )
        self._refresh_failures = Counter(
            "ml_platform_serving_refresh_failures_total",
            "Polls of the registry that failed (the service kept what it served).",
            ("model",),
            registry=self.registry,
        )
        self._backlog = Gauge(
            "ml_platform_serving_trail_backlog",
            "Calls journaled but not yet in the audit database.",
            ("model",),
            registry=self.registry,
        )
        self._served: set[tuple[str, str, str]] = set()
        self._refusals: set[tuple[str, str, str]] = set()

    def observe(
        self, model: str, version: str | None, role: str | None, status: int, seconds: float
    ) -> None:
        """Count one answered call; its latency too when a version answered it.

        Args:
            model: The model (``unknown`` for a name the service does not serve).
            version: The answering version, None when none did.
            role: ``champion`` or ``canary``, None when no version answered.
            status: The HTTP status.
            seconds: The call's latency.
        """
        labels = (model, version or NONE, role or NONE)
        self._requests.labels(*labels, str(status)).inc()
        if version is not None:
            self._latency.labels(*labels).observe(seconds)

    def set_traffic(self, model: str, shares: Iterable[tuple[str, str, float]]) -> None:
        """Set the traffic shares now served; versions no longer served are removed.

        Args:
            model: The model.
            shares: (version, role, share) of each served version.
        """
        current = set()
        for version, role, share in shares:
            self._share.labels(model, version, role).set(share)
            current.add((model, version, role))
        for labels in self._served - current:
            self._share.remove(*labels)
        self._served = current

    def set_refusals(self, model: str, refusals: Iterable[tuple[str, str]]) -> None:
        """Set the versions refused now, with their reasons; others are removed.

        Args:
            model: The model.
            refusals: (version, short reason) pairs.
        """
        current = set()
        for version, reason in refusals:
            self._refused.labels(model, version, reason).set(1)
            current.add((model, version, reason))
        for labels in self._refusals - current:
            self._refused.remove(*labels)
        self._refusals = current

    def refresh_failed(self, model: str) -> None:
        """Count a failed poll of the registry.

        Args:
            model: The model.
        """
        self._refresh_failures.labels(model).inc()

    def set_backlog(self, model: str, calls: int) -> None:
        """Set how many calls wait in the journal for the audit database.

        Args:
            model: The model.
            calls: The backlog.
        """
        self._backlog.labels(model).set(calls)

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format.

        Returns:
            The body and its content type.
        """
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
