"""Point-in-time correctness and row survival of the Feast historical join (real Feast, DuckDB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.payments.generator import generate_frames
from ml_platform.core.settings import PlatformSettings
from ml_platform.features.retrieval import historical_features
from ml_platform.features.store import apply_feature_repo
from ml_platform.spec.features import FeatureRepoSpec

SECOND = pd.Timedelta(seconds=1)


def epoch_seconds(times: pd.Series) -> pd.Series:
    return (times - pd.Timestamp(0, tz="UTC")) // SECOND


def stats_repo() -> FeatureRepoSpec:
    return FeatureRepoSpec.model_validate(
        {
            "kind": "features",
            "name": "pit",
            "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
            "sources": [
                {
                    "name": "customer_stats",
                    "path": "pit/stats.parquet",
                    "columns": {
                        "customer_id": "int64",
                        "event_timestamp": "timestamp",
                        "stat_epoch": "int64",
                        "value": "float64",
                    },
                }
            ],
            "feature_views": [
                {
                    "name": "customer_stats",
                    "entities": ["customer"],
                    "source": "customer_stats",
                    "ttl": "3d",
                    "features": ["stat_epoch", "value"],
                }
            ],
        }
    )


@pytest.fixture
def settings(platform_home: Path) -> PlatformSettings:
    return PlatformSettings.from_env()


def test_no_feature_value_from_after_the_label_leaks_in(settings: PlatformSettings) -> None:
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2026-03-01", tz="UTC")
    n_stats, n_labels, customers = 4000, 6000, 200
    stats = pd.DataFrame(
        {
            "customer_id": rng.integers(0, customers, n_stats),
            "event_timestamp": start + pd.to_timedelta(rng.integers(0, 30 * 86400, n_stats), "s"),
        }
    ).drop_duplicates(["customer_id", "event_timestamp"])
    # Each feature row carries its own timestamp, so a leak is visible in the joined value.
    stats["stat_epoch"] = epoch_seconds(stats["event_timestamp"])
    stats["value"] = rng.normal(size=len(stats))
    Path(settings.data_path("pit")).mkdir(parents=True)
    stats.to_parquet(settings.data_path("pit", "stats.parquet"))
    labels = pd.DataFrame(
        {
            "customer_id": rng.integers(0, customers + 20, n_labels),  # some have no features
            "event_timestamp": start + pd.to_timedelta(rng.integers(0, 32 * 86400, n_labels), "s"),
            "label": rng.integers(0, 2, n_labels),
        }
    )
    # Labels exactly at a feature row's timestamp and one second before it: the boundary cases.
    exact = stats.sample(300, random_state=1)[["customer_id", "event_timestamp"]]
    before = exact.assign(event_timestamp=exact["event_timestamp"] - SECOND)
    labels = pd.concat([labels, exact.assign(label=1), before.assign(label=0)], ignore_index=True)
    apply_feature_repo(stats_repo(), settings)

    joined = historical_features(
        settings, labels, ["customer_stats:stat_epoch", "customer_stats:value"], "event_timestamp"
    )

    assert len(joined) == len(labels)
    pd.testing.assert_frame_equal(
        joined[["customer_id", "event_timestamp", "label"]].reset_index(drop=True),
        labels.reset_index(drop=True),
        check_dtype=False,
    )
    label_epoch = epoch_seconds(joined["event_timestamp"])
    feature_epoch = joined["stat_epoch"]
    has = feature_epoch.notna()
    assert (feature_epoch[has] <= label_epoch[has]).all(), "a feature from the future leaked in"
    assert (label_epoch[has] - feature_epoch[has] <= 3 * 86400).all(), "TTL not applied"
    # Brute force: the newest feature row at or before each label, within the TTL.
    expected = (
        pd.merge_asof(
            labels.reset_index().sort_values("event_timestamp"),
            stats.sort_values("event_timestamp"),
            on="event_timestamp",
            by="customer_id",
            tolerance=pd.Timedelta(days=3),
            allow_exact_matches=True,
        )
        .set_index("index")
        .sort_index()
    )
    np.testing.assert_array_equal(
        joined["stat_epoch"].fillna(-1).to_numpy(), expected["stat_epoch"].fillna(-1).to_numpy()
    )
    assert joined["stat_epoch"].isna().sum() > 0  # entities without features keep their row


def test_same_day_aggregates_never_reach_earlier_payments(settings: PlatformSettings) -> None:
    """The example's daily stats are stamped at the day's end: a payment at noon must see
    the previous day's aggregate, which does not include the payment itself."""
    from ml_platform.spec.loading import load_project

    frames = generate_frames(n_transactions=20_000, seed=11)
    catalog = load_project(Path(__file__).resolve().parents[2], "")
    repo = catalog.feature_repos["payments"]
    for source in repo.sources:
        path = Path(settings.data_path(source.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        frames[source.name].to_parquet(path)
    apply_feature_repo(repo, settings)
    payments = frames["transactions"][["customer_id", "event_timestamp", "transaction_id"]]
    joined = historical_features(
        settings, payments, ["customer_activity:txn_count_7d"], "event_timestamp"
    )
    stats = frames["customer_daily_stats"]
    expected = (
        pd.merge_asof(
            payments.reset_index().sort_values("event_timestamp"),
            stats.sort_values("event_timestamp")[
                ["customer_id", "event_timestamp", "txn_count_7d"]
            ],
            on="event_timestamp",
            by="customer_id",
            tolerance=pd.Timedelta(days=7),
        )
        .set_index("index")
        .sort_index()
    )
    assert len(joined) == len(payments)
    np.testing.assert_array_equal(
        joined["txn_count_7d"].fillna(-1).to_numpy(), expected["txn_count_7d"].fillna(-1).to_numpy()
    )
    # The leak this guards against is real in the data: most payments have a stats row of
    # their own day (stamped after them), which the join must skip.
    own_day = payments.assign(
        event_timestamp=payments["event_timestamp"].dt.floor("D")
        + pd.Timedelta(days=1)
        - pd.Timedelta(microseconds=1)
    )
    has_own_day_row = own_day.merge(stats, on=["customer_id", "event_timestamp"], how="left")
    assert has_own_day_row["txn_count_7d"].notna().mean() > 0.9


def test_every_label_row_survives_duplicate_keys_and_missing_features(
    settings: PlatformSettings,
) -> None:
    """Rows sharing entity and timestamp, and rows with no feature at all, are all returned.

    Measured with Feast 0.67 at 1M rows: the dask ``file`` store dropped about 5% of the rows;
    the DuckDB store the platform uses keeps all of them.
    """
    start = pd.Timestamp("2026-03-01", tz="UTC")
    stats = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "event_timestamp": [start, start],
            "stat_epoch": [0, 0],
            "value": [1.0, 2.0],
        }
    )
    Path(settings.data_path("pit")).mkdir(parents=True)
    stats.to_parquet(settings.data_path("pit", "stats.parquet"))
    apply_feature_repo(stats_repo(), settings)
    labels = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 3, 3],
            "event_timestamp": [start + SECOND] * 3 + [start - SECOND, start, start],
            "label": [0, 1, 0, 1, 0, 1],
            "payment": [10, 11, 12, 13, 14, 15],
        }
    )
    joined = historical_features(settings, labels, ["customer_stats:value"], "event_timestamp")
    assert joined["payment"].tolist() == [10, 11, 12, 13, 14, 15]
    assert joined["value"].fillna(-1).tolist() == [1.0, 1.0, 1.0, -1, -1, -1]
