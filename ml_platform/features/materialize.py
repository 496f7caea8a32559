"""Materializing a feature view: gate its source data, apply the repo, load the view online.

A view whose data fails its blocking gate is neither applied nor materialized, and the verdict is
recorded (``ml_platform.gates.state``) so no training set is built on the view until it is
materialized again on passing data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ml_platform.core.progress import Phases
from ml_platform.core.settings import PlatformSettings
from ml_platform.features.store import apply_feature_repo, quiet_feast, source_path
from ml_platform.gates.state import record_view_gate
from ml_platform.spec.features import NUMERIC_TYPES, FeatureRepoSpec
from ml_platform.spec.values import parse_duration

if TYPE_CHECKING:
    from ml_platform.gates.report import GateReport


@dataclass(frozen=True)
class ViewSummary:
    """What a materialized feature view holds: rows, entities, time range, rows online."""

    rows: int
    entities: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    materialized_rows: int

    def freshness(self, now: datetime | None = None) -> timedelta | None:
        """Age of the newest row at ``now`` (default: the current time); None without rows."""
        if self.last_timestamp is None:
            return None
        return (now or datetime.now(UTC)) - self.last_timestamp


def feature_view_gate(
    spec: FeatureRepoSpec, view_name: str, settings: PlatformSettings
) -> GateReport:
    """Run a feature view's blocking data gate (GE 1.x) on its source data.

    Declared numeric features must hold finite numbers, whatever dtype the file has.

    Args:
        spec: the feature repo declaring the view.
        view_name: the feature view.
        settings: the platform settings (source paths, the GE context root).

    Returns:
        The gate's report.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from ml_platform.gates.expectations import gate_expectations
    from ml_platform.gates.run import run_gate

    view = next(v for v in spec.feature_views if v.name == view_name)
    source = next(s for s in spec.sources if s.name == view.source)
    keys = [k for e in spec.entities if e.name in view.entities for k in e.join_keys]
    path = source_path(settings, source.path)
    wanted = list(dict.fromkeys([*keys, source.timestamp_field, *view.features]))
    present = set(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in wanted if c in present])
    numeric = [f for f in view.features if source.columns[f] in NUMERIC_TYPES]
    expectations = gate_expectations(
        view.gates,
        label=None,
        task=None,
        key_columns=keys,
        timestamp_column=source.timestamp_field,
        feature_columns=view.features,
        numeric_columns=numeric,
    )
    return run_gate(
        frame,
        expectations,
        name=f"features/{view_name}",
        pii_columns=view.gates.pii_columns,
        context_root=str(settings.home / "great_expectations"),
    )


def materialize_feature_view(
    spec: FeatureRepoSpec,
    view_name: str,
    settings: PlatformSettings,
    log: Callable[[str], None] | None = None,
) -> tuple[ViewSummary | None, GateReport]:
    """Gate the view's source data, then apply the repo and load its latest values online.

    Data failing the gate is not applied or materialized, and the failure is recorded so no
    training set is built on the view until it is materialized again on passing data.
    The materialization window is the view's TTL before its newest row, so the online store holds
    exactly the values a request at the data's end could use.

    Args:
        spec: the feature repo declaring the view.
        view_name: the feature view.
        settings: the platform settings.
        log: receives one line per phase as it ends (gate, apply, materialize), with its time.

    Returns:
        The view's summary (None when the gate failed) and the gate's report.
    """
    import duckdb

    phases = Phases(f"feature view {view_name}", log)
    report = feature_view_gate(spec, view_name, settings)
    record_view_gate(settings, view_name, report.success)
    phases.done(f"data gate {'passed' if report.success else 'FAILED'}")
    if not report.success:
        return None, report
    view = next(v for v in spec.feature_views if v.name == view_name)
    source = next(s for s in spec.sources if s.name == view.source)
    store = apply_feature_repo(spec, settings)
    phases.done("applied the Feast definitions")
    keys = [k for e in spec.entities if e.name in view.entities for k in e.join_keys]
    path = source_path(settings, source.path)
    ts = source.timestamp_field
    with duckdb.connect() as connection:
        row = connection.execute(
            f"SELECT count(*), count(DISTINCT ({', '.join(keys)})), min({ts}), max({ts}) "
            "FROM read_parquet(?)",
            [path],
        ).fetchone()
    assert row is not None
    rows, entity_count, first, last = row
    first = _utc(first)
    last = _utc(last)
    materialized = 0
    if view.online and last is not None:
        start = last - parse_duration(view.ttl)
        with quiet_feast():
            store.materialize(
                start_date=start,
                end_date=last + timedelta(microseconds=1),
                feature_views=[view_name],
            )
        materialized = entity_count
        phases.done(f"materialized {entity_count:,} entities online", int(entity_count))
    summary = ViewSummary(
        rows=int(rows),
        entities=int(entity_count),
        first_timestamp=first,
        last_timestamp=last,
        materialized_rows=int(materialized),
    )
    return summary, report


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
