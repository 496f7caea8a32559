"""Source compilation follows the offline store: FileSources locally, SparkSources on Spark.

Only the offline store's ``type`` changes between the two; the feature views, entities and
services compiled from the example's feature repo are the same. SparkSource's module imports no
pyspark, so this runs without Java.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_platform.core.settings import PlatformSettings
from ml_platform.features.store import SPARK_OFFLINE_STORES, build_feast_objects
from ml_platform.spec.features import FeatureRepoSpec
from ml_platform.spec.loading import load_project

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def payments_repo() -> FeatureRepoSpec:
    return load_project(PROJECT_ROOT, "").feature_repos["payments"]


def compiled(spec: FeatureRepoSpec, offline_store: dict) -> dict[str, list]:
    settings = PlatformSettings.from_env(
        home=Path("/srv/ml"), data_root="s3://lake/ml", feast_offline_store=offline_store
    )
    by_kind: dict[str, list] = {}
    for item in build_feast_objects(spec, settings):
        by_kind.setdefault(type(item).__name__, []).append(item)
    return by_kind


@pytest.mark.parametrize("store_type", SPARK_OFFLINE_STORES)
def test_a_spark_offline_store_gets_parquet_spark_sources(
    payments_repo: FeatureRepoSpec, store_type: str
) -> None:
    objects = compiled(payments_repo, {"type": store_type, "spark_conf": {}})

    assert "FileSource" not in objects
    sources = {s.name: s for s in objects["SparkSource"]}
    assert sources.keys() == {s.name for s in payments_repo.sources}
    for spec in payments_repo.sources:
        source = sources[spec.name]
        assert source.path == f"s3://lake/ml/{spec.path}"
        assert source.file_format == "parquet"
        assert source.timestamp_field == spec.timestamp_field
        assert source.description == spec.description
    for view in objects["FeatureView"]:
        assert type(view.batch_source).__name__ == "SparkSource"


def test_other_offline_stores_keep_file_sources(payments_repo: FeatureRepoSpec) -> None:
    local = compiled(payments_repo, PlatformSettings.from_env().feast_offline_store)
    duckdb = compiled(payments_repo, {"type": "duckdb"})
    spark = compiled(payments_repo, {"type": "spark"})

    for objects in (local, duckdb):
        assert "SparkSource" not in objects
        assert len(objects["FileSource"]) == len(payments_repo.sources)
    # Everything but the sources compiles the same way whatever the store.
    for kind in ("Entity", "FeatureView", "FeatureService"):
        assert [o.name for o in spark[kind]] == [o.name for o in duckdb[kind]]
    for on_spark, on_duckdb in zip(spark["FeatureView"], duckdb["FeatureView"], strict=True):
        assert on_spark.ttl == on_duckdb.ttl
        assert on_spark.schema == on_duckdb.schema
        assert on_spark.entities == on_duckdb.entities
