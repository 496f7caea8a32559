"""Feature view assets: gate the view's data, apply its Feast definitions, materialize it online."""

import dagster as dg
from dagster import AssetExecutionContext

from assets.automation import automated_feature_views, gated_automation
from assets.keys import DATA_GATE, DATA_GATE_DESCRIPTION, FEATURES_GROUP, feature_key, source_key
from assets.metadata import failed_feature_view_metadata, feature_view_metadata, gate_check_result
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.features import FeatureRepoSpec, FeatureViewSpec
from resources import FeatureStoreResource, StorageResource


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
        automation_condition=gated_automation() if automated else None,
        description=view.description
        or f"Feast feature view '{view.name}' ({', '.join(view.features)}), TTL {view.ttl}.",
        metadata={"feature_repo": repo.name, "ttl": view.ttl, "features": ", ".join(view.features)},
    )
    def feature_view(
        context: AssetExecutionContext,
        storage: StorageResource,
        feature_store: FeatureStoreResource,
    ) -> dg.MaterializeResult:
        """Gate the view's data, apply the Feast definitions, materialize it online."""
        from ml_platform.features.materialize import materialize_feature_view

        summary, report = materialize_feature_view(repo, view.name, feature_store.settings(storage))
        check = gate_check_result(report)
        if summary is None:
            context.log.error(report.summary())
            return dg.MaterializeResult(
                metadata=failed_feature_view_metadata(), check_results=[check]
            )
        context.log.info(f"{view.name}: {summary}")
        return dg.MaterializeResult(metadata=feature_view_metadata(summary), check_results=[check])

    return feature_view


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
