"""Feature view assets: gate the view's data, apply its Feast definitions, materialize it online.

Each view also gets a ``fresh_within_ttl`` check (WARN): the newest event of its source against
its TTL, so a view whose data stopped arriving shows a warning with its staleness in hours.
"""

from datetime import UTC, datetime

import dagster as dg
from dagster import AssetExecutionContext

from assets.automation import automated_feature_views, gated_automation
from assets.keys import (
    DATA_GATE,
    DATA_GATE_DESCRIPTION,
    FEATURES_GROUP,
    FRESH_WITHIN_TTL,
    FRESH_WITHIN_TTL_DESCRIPTION,
    feature_key,
    source_key,
)
from assets.metadata import (
    declared_column_schema,
    failed_feature_view_metadata,
    feature_view_metadata,
    freshness_check_result,
    gate_check_result,
    read_column_schema,
    spec_owners,
)
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.features import FeatureRepoSpec, FeatureViewSpec, SourceSpec
from ml_platform.spec.values import parse_duration
from resources import FeatureStoreResource, StorageResource


def _source(repo: FeatureRepoSpec, view: FeatureViewSpec) -> SourceSpec:
    """The source spec a view reads."""
    return next(source for source in repo.sources if source.name == view.source)


def view_columns(repo: FeatureRepoSpec, view: FeatureViewSpec) -> dict[str, str]:
    """What a view reads from its source: join keys, event timestamp, features (with roles).

    Args:
        repo: the feature repository that declares the view.
        view: the feature view.

    Returns:
        Column name to its role (``join key``, ``event timestamp``, ``feature``), in that order.
    """
    source = _source(repo, view)
    keys = [k for e in repo.entities if e.name in view.entities for k in e.join_keys]
    roles = {key: "join key" for key in keys}
    roles[source.timestamp_field] = "event timestamp"
    roles.update({feature: "feature" for feature in view.features if feature not in roles})
    return roles


def build_feature_view(
    repo: FeatureRepoSpec, view: FeatureViewSpec, automated: bool = False
) -> dg.AssetsDefinition:
    """The asset ``features/<view>``, with its blocking data gate.

    Args:
        repo: the feature repository that declares the view.
        view: the feature view.
        automated: rebuild when its source changes (a model using it turns on automation).

    Returns:
        The asset; it depends on the view's source.
    """
    key = feature_key(view.name)
    source = _source(repo, view)
    roles = view_columns(repo, view)
    declared = {column: source.columns[column] for column in roles if column in source.columns}

    @dg.asset(
        key=key,
        deps=[source_key(view.source)],
        check_specs=[
            dg.AssetCheckSpec(
                DATA_GATE, asset=key, blocking=True, description=DATA_GATE_DESCRIPTION
            )
        ],
        group_name=FEATURES_GROUP,
        kinds={"feast"},
        owners=spec_owners(view, repo),
        automation_condition=gated_automation() if automated else None,
        description=view.description
        or f"Feast feature view '{view.name}' ({', '.join(view.features)}), TTL {view.ttl}."
        + (f" {repo.description}" if repo.description else ""),
        metadata={
            "feature_repo": repo.name,
            "ttl": view.ttl,
            "features": ", ".join(view.features),
            "dagster/column_schema": dg.MetadataValue.table_schema(
                declared_column_schema(declared, roles)
            ),
        },
    )
    def feature_view(
        context: AssetExecutionContext,
        storage: StorageResource,
        feature_store: FeatureStoreResource,
    ) -> dg.MaterializeResult:
        """Gate the view's data, apply the Feast definitions, materialize it online."""
        from ml_platform.features.materialize import materialize_feature_view

        settings = feature_store.settings(storage)
        summary, report = materialize_feature_view(repo, view.name, settings, log=context.log.info)
        check = gate_check_result(report)
        if summary is None:
            context.log.error(report.summary())
            return dg.MaterializeResult(
                metadata=failed_feature_view_metadata(), check_results=[check]
            )
        context.log.info(f"{view.name}: {summary}")
        columns = read_column_schema(settings.data_path(source.path), roles)
        return dg.MaterializeResult(
            metadata=feature_view_metadata(summary, columns), check_results=[check]
        )

    return feature_view


def newest_event(path: str, timestamp_field: str) -> datetime | None:
    """The newest event timestamp of a parquet source (UTC), reading that one column only.

    Args:
        path: the source's path or URL.
        timestamp_field: its event timestamp column.

    Returns:
        The newest timestamp (a naive one taken as UTC), or None when the file has no rows or
        cannot be read.
    """
    import pandas as pd
    import pyarrow as pa

    from ml_platform.core import storage

    try:
        values = storage.read_parquet(path, columns=[timestamp_field])[timestamp_field]
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
    newest = pd.to_datetime(values, utc=True).max()
    return None if pd.isna(newest) else newest.to_pydatetime()


def build_freshness_check(repo: FeatureRepoSpec, view: FeatureViewSpec) -> dg.AssetChecksDefinition:
    """The ``fresh_within_ttl`` check of ``features/<view>`` (WARN, never blocking).

    Args:
        repo: the feature repository that declares the view.
        view: the feature view.

    Returns:
        The check: it fails with a warning when the newest event of the view's source is older
        than the view's TTL, and runs with the view or on its own.
    """
    source = _source(repo, view)
    ttl_hours = parse_duration(view.ttl).total_seconds() / 3600

    @dg.asset_check(
        asset=feature_key(view.name),
        name=FRESH_WITHIN_TTL,
        description=FRESH_WITHIN_TTL_DESCRIPTION,
        blocking=False,
    )
    def fresh_within_ttl(storage: StorageResource) -> dg.AssetCheckResult:
        """The newest event of the view's source is younger than the view's TTL."""
        newest = newest_event(storage.settings().data_path(source.path), source.timestamp_field)
        return freshness_check_result(
            newest, view.ttl, ttl_hours, datetime.now(UTC), source=source.name
        )

    return fresh_within_ttl


def build_feature_views(catalog: Catalog) -> list[dg.AssetsDefinition]:
    """Every feature view of every feature repository of the catalog.

    Args:
        catalog: the loaded specs.

    Returns:
        One asset per view; views used by an automated model are automated too.
    """
    automated = automated_feature_views(catalog)
    return [
        build_feature_view(repo, view, view.name in automated)
        for repo in catalog.feature_repos.values()
        for view in repo.feature_views
    ]


def build_freshness_checks(catalog: Catalog) -> list[dg.AssetChecksDefinition]:
    """The ``fresh_within_ttl`` check of every feature view of the catalog.

    Args:
        catalog: the loaded specs.

    Returns:
        One WARN check per view.
    """
    return [
        build_freshness_check(repo, view)
        for repo in catalog.feature_repos.values()
        for view in repo.feature_views
    ]
