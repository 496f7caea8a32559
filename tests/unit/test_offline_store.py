"""The ASOF offline store returns what Feast's own DuckDB offline store returns.

Both stores read the same registry and parquet files; every case compares the two results row by
row (sorted by a row id), column by column, with NaN equal to NaN and identical dtypes. The data
is random per seed and holds what makes a point-in-time join hard: duplicate source rows, equal
event timestamps told apart by created timestamps (some null), rows outside the TTL, entity rows
at a feature row's timestamp and exactly at the TTL's edge, entity rows before any feature, with
unknown or null keys, duplicated entity rows, four views over three entities (one of them a
composite key, one with a field mapping). Full ties (equal keys, event and created timestamps)
with different values are ambiguous in Feast; the random data gives such rows equal values, and
one test pins the plugin's own rule for them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml_platform.features.offline_store import STORE_TYPE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

START = pd.Timestamp("2026-03-01", tz="UTC")
CUSTOMERS, MERCHANTS = 40, 12
ROW_ID = "row_id"


def feature_store(home: Path, offline_store: dict[str, Any]) -> Any:
    """A Feast store on the registry under ``home`` with the given offline store."""
    from feast import FeatureStore
    from feast.repo_config import RegistryConfig, RepoConfig

    config = RepoConfig(
        project="equality",
        provider="local",
        registry=RegistryConfig(path=str(home / "registry.db"), cache_ttl_seconds=0),
        offline_store=offline_store,
        online_store={"type": "sqlite", "path": str(home / "online.db")},
        entity_key_serialization_version=3,
    )
    return FeatureStore(config=config, repo_path=str(home))


def random_times(rng: np.random.Generator, n: int, days: int = 10) -> pd.Series:
    """Timestamps on a coarse grid (many collisions), in UTC."""
    minutes = rng.integers(0, days * 24 * 4, n) * 15
    return pd.Series(START + pd.to_timedelta(minutes, "min"))


def unambiguous(frame: pd.DataFrame, tie: list[str], values: list[str]) -> pd.DataFrame:
    """Full ties (equal ``tie`` columns) get the first row's values, so Feast's pick is defined."""
    firsts = frame.groupby(tie, dropna=False, sort=False)[values].transform("first")
    return frame.assign(**{column: firsts[column] for column in values})


def write_sources(rng: np.random.Generator, data: Path) -> dict[str, pd.DataFrame]:
    """Four parquet sources with duplicates, equal timestamps and null values."""
    n = 600
    created = random_times(rng, n).where(rng.random(n) > 0.2)  # some null created timestamps
    customer_stats = pd.DataFrame(
        {
            "customer_id": rng.integers(0, CUSTOMERS, n),
            "event_timestamp": random_times(rng, n),
            "created": created,
            "spend": rng.normal(size=n).round(3),
            "visits": rng.integers(0, 50, n),
            "segment": rng.choice(["a", "b", "c"], n),
        }
    )
    customer_stats.loc[rng.random(n) < 0.1, "spend"] = np.nan
    customer_stats = unambiguous(
        customer_stats,
        ["customer_id", "event_timestamp", "created"],
        ["spend", "visits", "segment"],
    )
    profile = pd.DataFrame(
        {
            "customer_id": rng.integers(0, CUSTOMERS, 120),
            "event_timestamp": random_times(rng, 120, days=4),
            "age": rng.integers(18, 90, 120).astype(np.int32),
        }
    )
    profile = unambiguous(profile, ["customer_id", "event_timestamp"], ["age"])
    merchants = [f"m{i}" for i in range(MERCHANTS)]
    merchant_stats = pd.DataFrame(
        {
            "merchant_id": rng.choice(merchants, 200),
            "ts": random_times(rng, 200),
            "fraud_rate": rng.random(200).round(4),
        }
    )
    merchant_stats = unambiguous(merchant_stats, ["merchant_id", "ts"], ["fraud_rate"])
    m = 500
    pair_stats = pd.DataFrame(
        {
            "customer_id": rng.integers(0, CUSTOMERS, m),
            "merchant_id": rng.choice(merchants, m),
            "event_timestamp": random_times(rng, m),
            "created": random_times(rng, m),
            "amount_raw": rng.gamma(2.0, 30.0, m).round(2),
        }
    )
    pair_stats = unambiguous(
        pair_stats, ["customer_id", "merchant_id", "event_timestamp", "created"], ["amount_raw"]
    )
    # Duplicate rows, copied whole.
    customer_stats = pd.concat([customer_stats, customer_stats.sample(60, random_state=1)])
    pair_stats = pd.concat([pair_stats, pair_stats.sample(40, random_state=2)])
    sources = {
        "customer_stats": customer_stats,
        "profile": profile,
        "merchant_stats": merchant_stats,
        "pair_stats": pair_stats,
    }
    for name, frame in sources.items():
        frame.sample(frac=1.0, random_state=3).to_parquet(data / f"{name}.parquet", index=False)
    return sources


def apply_repo(store: Any, data: Path) -> None:
    """Entities, sources, views (one per kind of case) and a feature service."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int32, Int64, String

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)

    def source(name: str, **options: Any) -> FileSource:
        return FileSource(name=name, path=str(data / f"{name}.parquet"), **options)

    customer_stats = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=timedelta(days=2),
        schema=[
            Field(name="spend", dtype=Float64),
            Field(name="visits", dtype=Int64),
            Field(name="segment", dtype=String),
        ],
        source=source(
            "customer_stats", timestamp_field="event_timestamp", created_timestamp_column="created"
        ),
    )
    profile = FeatureView(
        name="profile",
        entities=[customer],
        ttl=timedelta(0),  # unbounded
        schema=[Field(name="age", dtype=Int32)],
        source=source("profile", timestamp_field="event_timestamp"),
    )
    merchant_stats = FeatureView(
        name="merchant_stats",
        entities=[merchant],
        ttl=timedelta(days=1),
        schema=[Field(name="fraud_rate", dtype=Float64)],
        source=source("merchant_stats", timestamp_field="ts"),
    )
    pair_stats = FeatureView(
        name="pair_stats",
        entities=[customer, merchant],
        ttl=timedelta(hours=6),
        schema=[Field(name="amount", dtype=Float64)],
        source=source(
            "pair_stats",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
            field_mapping={"amount_raw": "amount"},
        ),
    )
    spend_and_segment = customer_stats[["spend", "segment"]]  # a projection of the view
    assert spend_and_segment is not None
    service = FeatureService(
        name="scoring", features=[spend_and_segment, merchant_stats, pair_stats]
    )
    store.apply([customer, merchant, customer_stats, profile, merchant_stats, pair_stats, service])


def entity_rows(rng: np.random.Generator, sources: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Random entity rows plus the boundary cases, duplicated rows and extra columns."""
    n = 700
    rows = pd.DataFrame(
        {
            "customer_id": rng.integers(0, CUSTOMERS + 5, n),  # some customers have no features
            "merchant_id": rng.choice([f"m{i}" for i in range(MERCHANTS + 2)], n).astype(object),
            "event_timestamp": random_times(rng, n, days=12),
        }
    )
    stats = sources["customer_stats"].sample(60, random_state=4)
    at_feature = stats[["customer_id", "event_timestamp"]].assign(merchant_id="m1")
    ttl_edge = at_feature.assign(
        event_timestamp=at_feature["event_timestamp"] + pd.Timedelta(2, "D")
    )
    past_edge = ttl_edge.assign(event_timestamp=ttl_edge["event_timestamp"] + pd.Timedelta(1, "s"))
    before_all = rows.head(20).assign(event_timestamp=START - pd.Timedelta(1, "D"))
    rows = pd.concat([rows, at_feature, ttl_edge, past_edge, before_all], ignore_index=True)
    rows.loc[rng.random(len(rows)) < 0.03, "merchant_id"] = None
    rows = pd.concat([rows, rows.sample(50, random_state=5)], ignore_index=True)  # duplicates
    rows = rows.sample(frac=1.0, random_state=6).reset_index(drop=True)
    rows["label"] = rng.integers(0, 2, len(rows))
    rows["note"] = rng.choice(["x", "y"], len(rows)).astype(object)
    rows[ROW_ID] = np.arange(len(rows))
    return rows


@pytest.fixture(scope="module", params=[0, 1, 2])
def repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One random repo per seed: the two stores, the sources and the entity rows.

    The equality tests run on every seed; the others on seed 0 (``indirect`` parametrization).
    """
    seed = request.param
    rng = np.random.default_rng(seed)
    home = tmp_path_factory.mktemp(f"offline_store_{seed}")
    sources = write_sources(rng, home)
    feast_store = feature_store(home, {"type": "duckdb"})
    apply_repo(feast_store, home)
    return {
        "seed": seed,
        "feast": feast_store,
        "asof": feature_store(home, {"type": STORE_TYPE}),
        "sources": sources,
        "entities": entity_rows(rng, sources),
    }


def both(repo: dict, features: Any, entities: pd.DataFrame | None = None, **kwargs: Any) -> tuple:
    """The two stores' results for the same call, sorted by row id."""
    results = []
    for name in ("feast", "asof"):
        frame = entities if entities is not None else repo["entities"]
        job = repo[name].get_historical_features(
            entity_df=frame.copy(), features=features, **kwargs
        )
        results.append(job.to_df().sort_values(ROW_ID).reset_index(drop=True))
    return tuple(results)


def assert_same(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected)
    pd.testing.assert_frame_equal(actual, expected, check_dtype=True, check_exact=True)


ALL_FEATURES = [
    "customer_stats:spend",
    "customer_stats:visits",
    "customer_stats:segment",
    "profile:age",
    "merchant_stats:fraud_rate",
    "pair_stats:amount",
]


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_same_result_as_feast_duckdb_store(repo: dict, full_feature_names: bool) -> None:
    expected, actual = both(repo, ALL_FEATURES, full_feature_names=full_feature_names)
    assert_same(expected, actual)
    assert len(actual) == len(repo["entities"])
    # The cases are present in the data, not only possible.
    spend = "customer_stats__spend" if full_feature_names else "spend"
    age = "profile__age" if full_feature_names else "age"
    assert actual[spend].isna().any() and actual[spend].notna().any()
    assert actual[age].notna().mean() > actual[spend].notna().mean()  # no TTL keeps more


def test_same_result_for_a_feature_service(repo: dict) -> None:
    service = repo["feast"].get_feature_service("scoring")
    expected, actual = both(repo, service)
    assert_same(expected, actual)
    assert [c for c in actual.columns if c in ("spend", "segment", "visits")] == [
        "spend",
        "segment",
    ]


@pytest.mark.parametrize("repo", [0], indirect=True)
def test_same_result_with_string_timestamps_and_one_view(repo: dict) -> None:
    entities = repo["entities"].assign(
        event_timestamp=repo["entities"]["event_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    )
    expected, actual = both(repo, ["merchant_stats:fraud_rate"], entities=entities)
    assert_same(expected, actual)


@pytest.mark.filterwarnings("ignore:On demand feature view is an experimental:RuntimeWarning")
@pytest.mark.parametrize("repo", [0], indirect=True)
def test_same_result_with_an_on_demand_view(repo: dict) -> None:
    from feast import Field
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64

    @on_demand_feature_view(
        sources=[repo["feast"].get_feature_view("customer_stats")],
        schema=[Field(name="spend_doubled", dtype=Float64)],
        mode="pandas",
    )
    def spend_features(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"spend_doubled": inputs["spend"] * 2})

    repo["feast"].apply([spend_features])
    expected, actual = both(repo, ["spend_features:spend_doubled", "profile:age"])
    assert_same(expected, actual)
    assert actual["spend_doubled"].notna().any()


@pytest.mark.parametrize("repo", [0], indirect=True)
def test_rows_come_back_in_the_entity_order(repo: dict) -> None:
    entities = repo["entities"]
    joined = repo["asof"].get_historical_features(entity_df=entities, features=ALL_FEATURES).to_df()
    assert joined[ROW_ID].tolist() == entities[ROW_ID].tolist()
    assert joined["label"].tolist() == entities["label"].tolist()


def test_full_ties_take_the_first_source_row(tmp_path: Path) -> None:
    """Equal keys, event and created timestamps, different values: Feast may return either;
    the plugin always returns the first in the source."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2],
            "event_timestamp": [START] * 5,
            "created": [START, START, START - pd.Timedelta(1, "h"), None, None],
            "value": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    ).to_parquet(tmp_path / "ties.parquet", index=False)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="ties",
        entities=[customer],
        ttl=timedelta(0),
        schema=[Field(name="value", dtype=Float64)],
        source=FileSource(
            path=str(tmp_path / "ties.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
    )
    feast_store = feature_store(tmp_path, {"type": "duckdb"})
    feast_store.apply([customer, view])
    asof = feature_store(tmp_path, {"type": STORE_TYPE})
    entities = pd.DataFrame({"customer_id": [1, 2], "event_timestamp": [START, START]})
    for _ in range(3):
        values = asof.get_historical_features(entity_df=entities, features=["ties:value"])
        assert values.to_df()["value"].tolist() == [1.0, 4.0]
    feast_values = (
        feast_store.get_historical_features(entity_df=entities, features=["ties:value"])
        .to_df()
        .sort_values("customer_id")["value"]
        .tolist()
    )
    assert feast_values[0] in (1.0, 2.0) and feast_values[1] in (4.0, 5.0)


@pytest.mark.parametrize("repo", [0], indirect=True)
def test_filter_by_created_timestamp_is_feast_own_join(repo: dict) -> None:
    expected, actual = both(
        repo, ["customer_stats:spend", "profile:age"], filter_by_created_timestamp=True
    )
    assert_same(expected, actual)


@pytest.mark.parametrize("repo", [0], indirect=True)
def test_entity_rows_as_sql_are_refused_with_a_reason(repo: dict) -> None:
    with pytest.raises(ValueError, match="entity_df must be a pandas DataFrame"):
        repo["asof"].get_historical_features(
            entity_df="SELECT 1 AS customer_id", features=["profile:age"]
        )


@pytest.mark.parametrize("repo", [0], indirect=True)
def test_missing_join_key_column_is_named(repo: dict) -> None:
    from feast.errors import FeastEntityDFMissingColumnsError

    entities = repo["entities"].drop(columns=["merchant_id"])
    with pytest.raises(FeastEntityDFMissingColumnsError, match="merchant_id"):
        repo["asof"].get_historical_features(entity_df=entities, features=ALL_FEATURES)


@pytest.mark.parametrize("repo", [0], indirect=True)
def test_no_entity_rows_give_an_empty_frame_with_the_columns(repo: dict) -> None:
    expected, actual = both(repo, ALL_FEATURES, entities=repo["entities"].head(0))
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == 0


def test_the_platform_uses_the_asof_store_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_platform.core.settings import FEAST_OFFLINE_STORE_ENV, PlatformSettings
    from ml_platform.features.offline_store import AsofDuckDBOfflineStore
    from ml_platform.features.store import feature_store as platform_feature_store

    monkeypatch.delenv(FEAST_OFFLINE_STORE_ENV, raising=False)
    settings = PlatformSettings.from_env(home=tmp_path)
    assert settings.feast_offline_store == {"type": STORE_TYPE}
    provider = platform_feature_store(settings)._get_provider()
    assert isinstance(provider.offline_store, AsofDuckDBOfflineStore)

    monkeypatch.setenv(FEAST_OFFLINE_STORE_ENV, f'{{"type": "{STORE_TYPE}", "threads": 2}}')
    configured = platform_feature_store(PlatformSettings.from_env(home=tmp_path)).config
    assert getattr(configured.offline_store, "threads", None) == 2

    monkeypatch.setenv(FEAST_OFFLINE_STORE_ENV, '{"type": "duckdb"}')
    assert PlatformSettings.from_env(home=tmp_path).feast_offline_store == {"type": "duckdb"}


@pytest.mark.parametrize("value", ["duckdb", "[]", '{"memory_limit": "1GB"}', "{"])
def test_an_offline_store_override_that_is_not_a_config_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_platform.core.settings import FEAST_OFFLINE_STORE_ENV, PlatformSettings

    monkeypatch.setenv(FEAST_OFFLINE_STORE_ENV, value)
    with pytest.raises(ValueError, match=f"{FEAST_OFFLINE_STORE_ENV} must be a JSON object"):
        PlatformSettings.from_env()
