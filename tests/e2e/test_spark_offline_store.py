"""The example's feature repo on Feast's Spark offline store, by configuration alone.

``ML_PLATFORM_FEAST_OFFLINE_STORE={"type": "spark", ...}`` makes the platform compile the sources
to SparkSources and Feast run the point-in-time join as Spark SQL (docs/scale.md). The training
set's join (``historical_features``, the platform's own path) must return the same rows and values
through Spark as through the local stores, on the payments example plus entity rows that stress
the join: unknown customers and merchants, rows before any feature, duplicated rows. The feature
view materialization (the other path through the offline store) puts the same values online.

Spark needs Java and pyspark; without them the test skips with the install commands, and
``ML_PLATFORM_REQUIRE_SPARK=1`` (set by ``.ci/run``) turns that skip into a failure. One Spark
session (local, 2 threads) serves the module; its start and the first query's planning are most
of this module's time (2-4 minutes measured on the 2 shared cores of the development machine
while other jobs ran).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.payments.generator import generate
from ml_platform.core.settings import PlatformSettings
from ml_platform.features.materialize import materialize_feature_view
from ml_platform.features.retrieval import historical_features
from ml_platform.features.store import apply_feature_repo, feature_store, quiet_feast
from ml_platform.spec.loading import load_project

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REQUIRE_ENV = "ML_PLATFORM_REQUIRE_SPARK"
OFFLINE_STORE_ENV = "ML_PLATFORM_FEAST_OFFLINE_STORE"
SHIPPED_CONFIGS = sorted((PROJECT_ROOT / "deploy" / "feast").glob("spark-*.json"))
# The shipped local configuration, sized down for a few thousand rows on a shared 2-core machine.
SPARK_STORE = json.loads((PROJECT_ROOT / "deploy" / "feast" / "spark-local.json").read_text())
SPARK_STORE["spark_conf"] |= {
    "spark.master": "local[2]",
    "spark.driver.memory": "1g",
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
    # Spark creates this directory when a session starts (by default in the working directory).
    "spark.sql.warehouse.dir": str(Path(tempfile.gettempdir()) / "ml_platform-spark-warehouse"),
    # Compiling code costs more than it saves on small data (the results are the same).
    "spark.sql.codegen.wholeStage": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


def spark_missing() -> str | None:
    """Why Spark cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: make install (the dev extra pins it)"
    java_home = os.environ.get("JAVA_HOME")
    if not shutil.which("java") and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java runtime: apt-get install -y --no-install-recommends openjdk-17-jre-headless"
    return None


@pytest.fixture(scope="module")
def spark_available() -> Iterator[None]:
    """Skip without Java or pyspark (fail under ML_PLATFORM_REQUIRE_SPARK=1); stop Spark after."""
    reason = spark_missing()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    yield
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


@pytest.fixture
def payments(platform_home: Path) -> tuple[PlatformSettings, pd.DataFrame]:
    """The payments tables at small size, and label rows with the join's hard cases added."""
    catalog = load_project(PROJECT_ROOT, "")
    repo = catalog.feature_repos["payments"]
    settings = PlatformSettings.from_env()
    generate(
        {s.name: settings.data_path(s.path) for s in repo.sources},
        n_transactions=2000,
        days=30,
        seed=11,
    )
    labels = pd.read_parquet(settings.data_path("payments/transactions.parquet"))
    rng = np.random.default_rng(5)
    unknown = labels.sample(40, random_state=1).assign(
        customer_id=lambda f: f["customer_id"] + 10**6
    )
    unknown.loc[unknown.index[::2], "merchant_id"] += 10**6
    early = labels.sample(40, random_state=2).assign(
        event_timestamp=lambda f: (
            f["event_timestamp"] - pd.to_timedelta(rng.integers(40, 400, len(f)), "D")
        )
    )
    duplicated = labels.sample(40, random_state=3)
    rows = pd.concat([labels, unknown, early, duplicated], ignore_index=True)
    return settings, rows.sample(frac=1.0, random_state=4).reset_index(drop=True)


def joined_through(
    store: dict, settings: PlatformSettings, rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> pd.DataFrame:
    """The training-set join of the fraud model's features with ``store`` configured by env."""
    name = str(store["type"]).rsplit(".", 1)[-1]
    monkeypatch.setenv(OFFLINE_STORE_ENV, json.dumps(store))
    configured = PlatformSettings.from_env(
        feast_registry=str(settings.home / "feast" / f"registry-{name}.db")
    )
    assert configured.feast_offline_store == store
    catalog = load_project(PROJECT_ROOT, "")
    apply_feature_repo(catalog.feature_repos["payments"], configured)
    refs = catalog.resolved["fraud_detection"].feature_refs
    return historical_features(configured, rows, refs, "event_timestamp")


def test_the_spark_store_joins_the_example_like_the_local_stores(
    spark_available: None,
    payments: tuple[PlatformSettings, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, rows = payments
    spark = joined_through(SPARK_STORE, settings, rows, monkeypatch)

    # Spark ran the join: the registry holds SparkSources, Feast's session has the entity rows.
    from pyspark.sql import SparkSession

    spark_settings = replace(
        settings,
        feast_offline_store=SPARK_STORE,
        feast_registry=str(settings.home / "feast" / "registry-spark.db"),
    )
    with quiet_feast():
        sources = feature_store(spark_settings).list_data_sources()
    assert {type(s).__name__ for s in sources} == {"SparkSource"}
    session = SparkSession.getActiveSession()
    assert session is not None
    assert any(t.name.startswith("feast_entity_df") for t in session.catalog.listTables())

    monkeypatch.delenv(OFFLINE_STORE_ENV)
    references = [PlatformSettings.from_env().feast_offline_store, {"type": "duckdb"}]
    for store in [s for i, s in enumerate(references) if s not in references[:i]]:
        local = joined_through(store, settings, rows, monkeypatch)
        assert len(spark) == len(local) == len(rows), store
        pd.testing.assert_frame_equal(
            spark, local, check_exact=True, obj=f"the join through Spark vs {store['type']}"
        )
    # The hard cases are in the data: features missing (unknown keys, rows too early) and present.
    assert spark["age_years"].isna().sum() >= 40
    assert spark["txn_count_7d"].notna().sum() >= len(rows) // 2


def test_materializing_through_spark_puts_the_same_values_online(
    spark_available: None,
    payments: tuple[PlatformSettings, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, rows = payments
    repo = load_project(PROJECT_ROOT, "").feature_repos["payments"]
    view = next(v for v in repo.feature_views if v.name == "customer_activity")
    entity_rows = [{"customer_id": int(c)} for c in rows["customer_id"].unique()[:200]]
    online: dict[str, pd.DataFrame] = {}
    for name, store in (("spark", SPARK_STORE), ("local", None)):
        if store is None:
            monkeypatch.delenv(OFFLINE_STORE_ENV)
        else:
            monkeypatch.setenv(OFFLINE_STORE_ENV, json.dumps(store))
        configured = PlatformSettings.from_env(
            feast_registry=str(settings.home / "feast" / f"registry-{name}.db"),
            feast_online_store={"type": "sqlite", "path": str(settings.home / f"online-{name}.db")},
        )
        # The 7-day view: the materialization window is its TTL before the newest row.
        summary, report = materialize_feature_view(repo, view.name, configured)
        assert report.success and summary is not None and summary.materialized_rows > 0
        with quiet_feast():
            online[name] = (
                feature_store(configured)
                .get_online_features(
                    features=[f"{view.name}:{f}" for f in view.features],
                    entity_rows=entity_rows,
                )
                .to_df()
            )

    pd.testing.assert_frame_equal(online["spark"], online["local"], check_exact=True)
    assert online["spark"]["txn_count_7d"].notna().sum() > 0


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_the_shipped_spark_configurations_are_feast_configurations(
    spark_available: None, path: Path
) -> None:
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
        SparkOfflineStoreConfig,
    )

    config = SparkOfflineStoreConfig(**json.loads(path.read_text()))

    assert config.spark_conf is not None
    # Feast writes timestamp bounds into its SQL as UTC strings: any other zone shifts every TTL.
    assert config.spark_conf["spark.sql.session.timeZone"] == "UTC"
