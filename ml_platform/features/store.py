"""The Feast feature store on the platform's settings, and feature-repo specs compiled into it.

The offline store defaults to DuckDB (measured in bench/feast_offline_store.py: it keeps every
entity row and is about 3x faster than the dask ``file`` store at 1M rows).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ml_platform.core.settings import PlatformSettings
from ml_platform.spec.features import FeatureRepoSpec, SourceSpec
from ml_platform.spec.values import parse_duration

if TYPE_CHECKING:
    from feast import FeatureStore

# Feast's names of its Spark offline store, whose sources must be SparkSources.
SPARK_OFFLINE_STORES = (
    "spark",
    "feast.infra.offline_stores.contrib.spark_offline_store.spark.SparkOfflineStore",
)


@contextmanager
def quiet_feast() -> Iterator[None]:
    """Call Feast without third-party warnings a user cannot act on; keep every other warning.

    Feast's modules call ``warnings.simplefilter("once", DeprecationWarning)`` when imported, a
    process-wide change that would show every library's deprecation notices (Dagster's own use of
    its deprecated APIs among them) in the output of the CLI and of the runs. Feast is imported in
    here, so that change is undone when the block ends. Inside, warnings are filtered by module,
    category and message: Feast's DuckDB offline store reads results through ibis, which calls
    DuckDB's deprecated ``fetch_arrow_table``; Feast's Spark store and source warn that they are
    experimental on every use.

    Yields:
        Nothing; run the Feast calls in the block.
    """
    with warnings.catch_warnings():
        import feast  # noqa: F401  (first import: its filter changes end with this block)

        warnings.filterwarnings(
            "ignore",
            message=r"fetch_arrow_table\(\) is deprecated",
            category=DeprecationWarning,
            module=r"ibis\.backends\.duckdb",
        )
        # Feast's Spark store and source say "experimental" on every call (docs/scale.md says it
        # once, where the store is chosen).
        warnings.filterwarnings(
            "ignore",
            message=r"The spark (offline store|data source API) is an experimental feature",
            category=RuntimeWarning,
            module=r"feast\.infra\.offline_stores\.contrib\.spark_offline_store",
        )
        yield


def feature_store(settings: PlatformSettings) -> FeatureStore:
    """A Feast FeatureStore on the platform's registry, offline and online stores.

    Args:
        settings: the platform settings naming the Feast project, registry and stores; local
            directories they name are created.

    Returns:
        The feature store. It reads the registry once (a cache TTL of 0 is Feast's "never
        expire"): build a new one to see definitions applied since.
    """
    from pathlib import Path

    online = dict(settings.feast_online_store)
    for path in (settings.feast_registry, online.get("path")):
        if path and "://" not in path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    # The config names the stores, whose modules Feast imports here.
    with quiet_feast():
        from feast import FeatureStore
        from feast.repo_config import RegistryConfig, RepoConfig

        config = RepoConfig(
            project=settings.feast_project,
            provider="local",
            registry=RegistryConfig(path=settings.feast_registry, cache_ttl_seconds=0),
            offline_store=dict(settings.feast_offline_store),
            online_store=online,
            entity_key_serialization_version=3,
        )
        return FeatureStore(config=config, repo_path=str(settings.home))


def source_path(settings: PlatformSettings, path: str) -> str:
    """Resolve a source path from a spec: relative paths live under the data root.

    Args:
        settings: the platform settings (their data root).
        path: the ``path`` of a source spec: relative, absolute or a URL.

    Returns:
        The path or URL to read.
    """
    return settings.data_path(path)


def build_feast_objects(spec: FeatureRepoSpec, settings: PlatformSettings) -> list[Any]:
    """Compile a feature-repo spec into Feast Entities, sources, FeatureViews, services.

    Sources are FileSources, or SparkSources (parquet) when the offline store is Spark: each
    Feast offline store joins only its own kind of source (see docs/scale.md).

    Args:
        spec: the feature repo.
        settings: the platform settings, to resolve source paths.

    Returns:
        Entities, sources, feature views and feature services, in that order (what
        ``FeatureStore.apply`` takes).
    """
    with quiet_feast():
        from feast import FeatureService, FeatureView, Field
        from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

    feast_types = {
        "int64": Int64,
        "int32": Int32,
        "float64": Float64,
        "float32": Float32,
        "string": String,
        "bool": Bool,
        "timestamp": UnixTimestamp,
    }
    sources = {s.name: _source(s, settings) for s in spec.sources}
    source_specs = {s.name: s for s in spec.sources}
    entity_keys = {e.name: e.join_keys for e in spec.entities}
    entities = _entities(spec)
    views: dict[str, Any] = {}
    for view in spec.feature_views:
        columns = source_specs[view.source].columns
        join_keys = [k for e in view.entities for k in entity_keys[e]]
        views[view.name] = FeatureView(
            name=view.name,
            entities=[entities[e] for e in view.entities],
            ttl=parse_duration(view.ttl),
            schema=[Field(name=k, dtype=feast_types[columns[k]]) for k in join_keys]
            + [Field(name=f, dtype=feast_types[columns[f]]) for f in view.features],
            source=sources[view.source],
            online=view.online,
            description=view.description,
            tags={"feature_repo": spec.name},
        )
    services = [
        FeatureService(
            name=service.name,
            features=[views[name] for name in service.feature_views],
            description=service.description,
        )
        for service in spec.feature_services
    ]
    return [*entities.values(), *sources.values(), *views.values(), *services]


def _source(source: SourceSpec, settings: PlatformSettings) -> Any:
    """The Feast source of a parquet source spec, of the kind the offline store reads."""
    path = source_path(settings, source.path)
    with quiet_feast():
        if settings.feast_offline_store.get("type") in SPARK_OFFLINE_STORES:
            from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
                SparkSource,
            )

            return SparkSource(
                name=source.name,
                path=path,
                file_format="parquet",
                timestamp_field=source.timestamp_field,
                description=source.description,
            )
        from feast import FileSource

        return FileSource(
            name=source.name,
            path=path,
            timestamp_field=source.timestamp_field,
            description=source.description,
        )


def _entities(spec: FeatureRepoSpec) -> dict[str, Any]:
    """Feast entities by name; a key's value type comes from the first source declaring it."""
    with quiet_feast():
        from feast import Entity, ValueType

    value_types = {
        "int64": ValueType.INT64,
        "int32": ValueType.INT32,
        "string": ValueType.STRING,
        "float64": ValueType.DOUBLE,
        "float32": ValueType.FLOAT,
        "bool": ValueType.BOOL,
    }
    entities: dict[str, Any] = {}
    for entity in spec.entities:
        key_type = next(
            (
                s.columns[entity.join_keys[0]]
                for s in spec.sources
                if entity.join_keys[0] in s.columns
            ),
            "int64",
        )
        entities[entity.name] = Entity(
            name=entity.name,
            join_keys=entity.join_keys,
            value_type=value_types.get(key_type, ValueType.UNKNOWN),
            description=entity.description,
        )
    return entities


def apply_feature_repo(spec: FeatureRepoSpec, settings: PlatformSettings) -> FeatureStore:
    """Register a feature repo's definitions in the Feast registry (idempotent).

    Args:
        spec: the feature repo.
        settings: the platform settings.

    Returns:
        The feature store the definitions were applied to.
    """
    store = feature_store(settings)
    with quiet_feast():
        store.apply(build_feast_objects(spec, settings))
    return store
