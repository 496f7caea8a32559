"""Source assets: a generated multi-asset per feature repo with a generator, else external specs."""

from collections.abc import Iterator

import dagster as dg
from dagster import AssetExecutionContext

from assets.keys import SOURCES_GROUP, source_key
from assets.metadata import (
    COLUMN_SCHEMA,
    declared_column_schema,
    generated_source_metadata,
    read_column_schema,
    spec_owners,
)
from ml_platform.core.helpers import redact_url
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.features import FeatureRepoSpec, SourceSpec
from resources import StorageResource


def _declared(source: SourceSpec) -> dict[str, object]:
    """A source's declared columns as definition metadata (shown before any materialization)."""
    roles = {source.timestamp_field: "event timestamp"}
    return {
        COLUMN_SCHEMA: dg.MetadataValue.table_schema(declared_column_schema(source.columns, roles))
    }


def build_generated_sources(repo: FeatureRepoSpec) -> dg.AssetsDefinition:
    """One multi-asset that runs the repo's data generator and writes every source of the repo.

    Args:
        repo: a feature repository spec with a ``generator``.

    Returns:
        The multi-asset ``generate_<repo>_sources``, one output per source.
    """
    generator = repo.generator
    assert generator is not None, f"feature repo '{repo.name}' has no generator"

    @dg.multi_asset(
        name=f"generate_{repo.name}_sources",
        specs=[
            dg.AssetSpec(
                source_key(source.name),
                description=source.description or f"Source '{source.name}' of {repo.name}.",
                group_name=SOURCES_GROUP,
                kinds={"parquet"},
                owners=spec_owners(source, repo),
                metadata={
                    "path": redact_url(source.path),
                    "generator": generator.function,
                    **_declared(source),
                },
            )
            for source in repo.sources
        ],
    )
    def generate_sources(
        context: AssetExecutionContext, storage: StorageResource
    ) -> Iterator[dg.MaterializeResult]:
        """Run the repo's data generator, writing every source's parquet file."""
        from ml_platform.features.generation import run_generator

        settings = storage.settings()
        counts = run_generator(repo, settings)
        for source in repo.sources:
            rows = counts.get(source.name, 0)
            path = settings.data_path(source.path)
            yield dg.MaterializeResult(
                asset_key=source_key(source.name),
                metadata=generated_source_metadata(
                    rows, path, generator.params, read_column_schema(path)
                ),
            )
        context.log.info(f"generated {counts}")

    return generate_sources


def build_external_sources(repo: FeatureRepoSpec) -> list[dg.AssetSpec]:
    """The sources of a repo without a generator: files written outside the platform.

    Args:
        repo: a feature repository spec without a ``generator``.

    Returns:
        One external (not materializable) asset spec per source.
    """
    return [
        dg.AssetSpec(
            source_key(source.name),
            description=source.description
            or f"External source '{source.name}' ({redact_url(source.path)}).",
            group_name=SOURCES_GROUP,
            kinds={"parquet"},
            owners=spec_owners(source, repo),
            metadata={"path": redact_url(source.path), **_declared(source)},
        )
        for source in repo.sources
    ]


def build_sources(catalog: Catalog) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """The source assets of every feature repository of the catalog.

    Args:
        catalog: the loaded specs.

    Returns:
        A generated multi-asset per repo with a generator, external specs for the others.
    """
    built: list[dg.AssetsDefinition | dg.AssetSpec] = []
    for repo in catalog.feature_repos.values():
        if repo.generator is not None:
            built.append(build_generated_sources(repo))
        else:
            built += build_external_sources(repo)
    return built
