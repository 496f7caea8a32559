"""Tests for the payments example's synthetic data generator (``examples/payments``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from examples.payments.config import CATEGORIES, CHANNELS, REGIONS, TABLE_SCHEMAS, TABLES
from examples.payments.generator import generate, generate_frames
from examples.payments.windows import count_covering

N_TRANSACTIONS = 40_000
SEED = 3
START = pd.Timestamp("2026-01-01", tz="UTC")
DAYS = 120
DRIFT_START = pd.Timestamp("2026-03-01", tz="UTC")
ONE_DAY = pd.Timedelta(days=1)
DAY_US = 86_400_000_000
WEEK = pd.Timedelta(days=7)
MONTH = pd.Timedelta(days=30)
END = START + pd.Timedelta(days=DAYS)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return generate_frames(n_transactions=N_TRANSACTIONS, seed=SEED, days=DAYS)


@pytest.fixture(scope="module")
def drifted_frames() -> dict[str, pd.DataFrame]:
    return generate_frames(
        n_transactions=N_TRANSACTIONS, seed=SEED, days=DAYS, drift_start="2026-03-01"
    )


def _outputs(root: Path) -> dict[str, Path]:
    return {table: root / "nested" / f"{table}.parquet" for table in TABLES}


def _microseconds(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Microseconds since the epoch of a `datetime64[us, UTC]` column."""
    return frame[column].astype("int64").to_numpy()


def _busiest_and_random(ids: np.ndarray, busiest: int, random: int) -> np.ndarray:
    """The `busiest` most frequent ids plus `random` others drawn with a fixed seed."""
    unique, counts = np.unique(ids, return_counts=True)
    top = unique[np.argsort(-counts, kind="stable")[:busiest]]
    rest = np.setdiff1d(unique, top)
    return np.concatenate([top, np.random.default_rng(0).choice(rest, random, replace=False)])


def test_same_seed_gives_identical_frames(frames: dict[str, pd.DataFrame]) -> None:
    again = generate_frames(n_transactions=N_TRANSACTIONS, seed=SEED, days=DAYS)
    for table in TABLES:
        pd.testing.assert_frame_equal(frames[table], again[table])


def test_other_seed_gives_other_data(frames: dict[str, pd.DataFrame]) -> None:
    other = generate_frames(n_transactions=N_TRANSACTIONS, seed=SEED + 1, days=DAYS)
    assert not frames["transactions"]["amount"].equals(other["transactions"]["amount"])


@pytest.mark.parametrize("table", TABLES)
def test_table_has_exact_schema(frames: dict[str, pd.DataFrame], table: str) -> None:
    frame = frames[table]
    schema = TABLE_SCHEMAS[table]
    assert list(frame.columns) == schema.names
    for field in schema:
        column = frame[field.name]
        if pa.types.is_timestamp(field.type):
            assert column.dtype == pd.DatetimeTZDtype(unit="us", tz="UTC"), field.name
        elif pa.types.is_string(field.type):
            assert column.dtype == object, field.name
            assert all(type(value) is str for value in column), field.name
        else:
            assert column.dtype == np.dtype(field.type.to_pandas_dtype()), field.name
        assert not column.isna().to_numpy().any(), field.name
    arrow_schema = pa.Table.from_pandas(frame, preserve_index=False).schema.remove_metadata()
    assert arrow_schema.equals(schema)


def test_transactions_have_valid_values(frames: dict[str, pd.DataFrame]) -> None:
    transactions = frames["transactions"]
    assert transactions["transaction_id"].is_unique
    assert transactions["event_timestamp"].is_monotonic_increasing
    assert transactions["event_timestamp"].min() >= START
    assert transactions["event_timestamp"].max() < END
    assert set(transactions["channel"]) == set(CHANNELS)
    assert set(transactions["merchant_category"]) == set(CATEGORIES)
    assert set(transactions["region"]) == set(REGIONS)
    assert transactions["amount"].min() > 0
    assert np.allclose(transactions["amount"], transactions["amount"].round(2), rtol=0, atol=1e-9)
    assert 0 < transactions["is_international"].mean() < 0.05
    assert set(transactions["merchant_id"]) <= set(frames["merchant_profile"]["merchant_id"])
    assert set(transactions["customer_id"]) <= set(frames["customer_profile"]["customer_id"])


def test_hour_of_day_matches_event_timestamp(frames: dict[str, pd.DataFrame]) -> None:
    transactions = frames["transactions"]
    hours = transactions["event_timestamp"].dt.hour.to_numpy()
    assert np.array_equal(transactions["hour_of_day"].to_numpy(), hours)
    by_hour = transactions["hour_of_day"].value_counts()
    assert by_hour.loc[12] > 3 * by_hour.loc[3]


def test_weekend_is_busier_than_midweek(frames: dict[str, pd.DataFrame]) -> None:
    weekday = frames["transactions"]["event_timestamp"].dt.dayofweek.value_counts()
    assert weekday.loc[[4, 5]].mean() > 1.1 * weekday.loc[[1, 2]].mean()


def test_fraud_rate_is_realistic(frames: dict[str, pd.DataFrame]) -> None:
    assert 0.005 <= frames["transactions"]["is_fraud"].mean() <= 0.03


def test_fraud_payments_are_larger(frames: dict[str, pd.DataFrame]) -> None:
    medians = frames["transactions"].groupby("is_fraud")["amount"].median()
    assert medians.loc[1] > 1.5 * medians.loc[0]


def test_one_region_has_noticeably_more_fraud(frames: dict[str, pd.DataFrame]) -> None:
    transactions = frames["transactions"]
    rates = transactions.groupby("region")["is_fraud"].mean()
    others = transactions.loc[transactions["region"] != "mombasa", "is_fraud"].mean()
    assert rates.idxmax() == "mombasa"
    assert rates.loc["mombasa"] > 1.5 * others


def test_risk_tier_tracks_fraud(frames: dict[str, pd.DataFrame]) -> None:
    transactions = frames["transactions"].merge(frames["merchant_profile"], on="merchant_id")
    rates = transactions.groupby("merchant_risk_tier")["is_fraud"].mean()
    assert rates.loc[3] > rates.loc[1]


def test_labels_arrive_after_payment(frames: dict[str, pd.DataFrame]) -> None:
    transactions = frames["transactions"]
    delay = transactions["label_timestamp"] - transactions["event_timestamp"]
    fraud = transactions["is_fraud"] == 1
    assert (delay > pd.Timedelta(0)).all()
    assert delay[fraud].between(ONE_DAY, pd.Timedelta(days=45)).all()
    assert (delay[fraud] <= pd.Timedelta(days=10)).mean() > 0.6
    assert delay[~fraud].eq(MONTH).all()


def test_payments_happen_after_signup(frames: dict[str, pd.DataFrame]) -> None:
    profile = frames["customer_profile"]
    signups = profile.drop_duplicates("customer_id")[["customer_id", "event_timestamp"]]
    transactions = frames["transactions"]
    joined = transactions.merge(signups, on="customer_id", suffixes=("", "_signup"))
    assert len(joined) == len(transactions)
    assert np.all(
        _microseconds(joined, "event_timestamp") > _microseconds(joined, "event_timestamp_signup")
    )


def test_customer_profile_has_signups_and_updates(frames: dict[str, pd.DataFrame]) -> None:
    profile = frames["customer_profile"]
    is_signup = ~profile.duplicated("customer_id").to_numpy()
    first, later = profile[is_signup], profile[~is_signup]
    assert set(first["customer_id"]) == set(profile["customer_id"])
    assert set(first["account_age_days"]) == {0}
    assert (first["event_timestamp"] < START).mean() > 0.8
    assert first["event_timestamp"].min() >= START - pd.Timedelta(days=731)
    assert len(later) > 0
    assert later["account_age_days"].min() > 0
    assert set(profile["kyc_level"]) == {1, 2, 3}
    merchants = frames["merchant_profile"]
    assert merchants["event_timestamp"].max() < START
    assert set(merchants["merchant_risk_tier"]) == {1, 2, 3}


def test_customer_daily_stats_match_brute_force(frames: dict[str, pd.DataFrame]) -> None:
    transactions = frames["transactions"]
    stats = frames["customer_daily_stats"]
    stamped = _microseconds(stats, "event_timestamp")
    assert np.all((stamped + 1) % DAY_US == 0), "stats must be stamped at the end of their day"
    assert not stats.duplicated(["customer_id", "event_timestamp"]).to_numpy().any()
    for customer_id in _busiest_and_random(transactions["customer_id"].to_numpy(), 3, 5):
        own = transactions["customer_id"].to_numpy() == customer_id
        paid = _microseconds(transactions, "event_timestamp")[own]
        amount = transactions["amount"].to_numpy()[own]
        merchant = transactions["merchant_id"].to_numpy()[own]
        hour = transactions["hour_of_day"].to_numpy()[own]
        own_stats = stats["customer_id"].to_numpy() == customer_id
        day_ends = stamped[own_stats]
        count, mean, largest, distinct, night_share = (
            stats[column].to_numpy()[own_stats]
            for column in (
                "txn_count_7d",
                "txn_amount_mean_7d",
                "txn_amount_max_7d",
                "distinct_merchants_7d",
                "night_txn_share_7d",
            )
        )
        assert np.array_equal(day_ends, np.unique((paid // DAY_US + 1) * DAY_US - 1))
        for row, day_end in enumerate(day_ends):
            window = (paid > day_end - 7 * DAY_US) & (paid <= day_end)
            assert count[row] == window.sum()
            assert mean[row] == pytest.approx(amount[window].mean(), abs=1e-9)
            assert largest[row] == amount[window].max()
            assert distinct[row] == len(set(merchant[window]))
            assert night_share[row] == pytest.approx((hour[window] < 6).mean(), abs=1e-12)


@pytest.mark.parametrize("sorted_queries", [True, False])
def test_count_covering_matches_brute_force(sorted_queries: bool) -> None:
    rng = np.random.default_rng(5)
    group = rng.integers(0, 6, 500)
    begin = rng.integers(0, 40, 500)
    end = begin + rng.integers(1, 10, 500)
    query_group = rng.integers(0, 7, 300)
    query_at = rng.integers(0, 55, 300)
    if sorted_queries:  # the already-sorted path and the sort-then-probe path give the same
        order = np.lexsort((query_at, query_group))
        query_group, query_at = query_group[order], query_at[order]
    counts = count_covering(group, begin, end, query_group, query_at, width=60)
    expected = [
        int(np.sum((group == g) & (begin <= at) & (at < end)))
        for g, at in zip(query_group, query_at, strict=True)
    ]
    assert counts.tolist() == expected


def test_merchant_daily_stats_use_only_known_labels(frames: dict[str, pd.DataFrame]) -> None:
    transactions = frames["transactions"]
    stats = frames["merchant_daily_stats"]
    stamped = _microseconds(stats, "event_timestamp")
    assert np.all((stamped + 1) % DAY_US == 0), "stats must be stamped at the end of their day"
    is_fraud = transactions["is_fraud"].to_numpy() == 1
    merchant_ids = transactions["merchant_id"].to_numpy()
    # Merchants with the most fraud are where a label leak would show; add a few random ones.
    sampled = _busiest_and_random(merchant_ids[is_fraud], 4, 0)
    sampled = np.concatenate([sampled, _busiest_and_random(merchant_ids, 0, 2)])
    pending_fraud_seen = 0
    for merchant_id in sampled:
        own = merchant_ids == merchant_id
        paid = _microseconds(transactions, "event_timestamp")[own]
        labelled = _microseconds(transactions, "label_timestamp")[own]
        amount = transactions["amount"].to_numpy()[own]
        fraud = is_fraud[own]
        own_stats = stats["merchant_id"].to_numpy() == merchant_id
        count, mean, fraud_rate = (
            stats[column].to_numpy()[own_stats]
            for column in (
                "merchant_txn_count_7d",
                "merchant_amount_mean_7d",
                "merchant_fraud_rate_30d",
            )
        )
        for row, day_end in enumerate(stamped[own_stats]):
            week = (paid > day_end - 7 * DAY_US) & (paid <= day_end)
            assert count[row] == week.sum()
            assert mean[row] == pytest.approx(amount[week].mean(), abs=1e-9)
            month = (paid > day_end - 30 * DAY_US) & (paid <= day_end)
            known = labelled <= day_end
            pending_fraud_seen += (month & fraud & ~known).sum()
            assert fraud_rate[row] == pytest.approx(
                (month & fraud & known).sum() / month.sum(), abs=1e-12
            )
    # Without fraud whose label was still pending, the check above would prove nothing.
    assert pending_fraud_seen > 0


def test_drift_leaves_earlier_data_identical(
    frames: dict[str, pd.DataFrame], drifted_frames: dict[str, pd.DataFrame]
) -> None:
    for table in ("customer_profile", "merchant_profile"):
        pd.testing.assert_frame_equal(frames[table], drifted_frames[table])
    for table in ("transactions", "customer_daily_stats", "merchant_daily_stats"):
        before = frames[table][frames[table]["event_timestamp"] < DRIFT_START]
        drifted = drifted_frames[table]
        drifted_before = drifted[drifted["event_timestamp"] < DRIFT_START]
        assert len(before) > 0
        pd.testing.assert_frame_equal(
            before.reset_index(drop=True), drifted_before.reset_index(drop=True)
        )
    assert len(drifted_frames["transactions"]) == N_TRANSACTIONS


def test_drift_shifts_later_payments(
    frames: dict[str, pd.DataFrame], drifted_frames: dict[str, pd.DataFrame]
) -> None:
    plain = frames["transactions"][frames["transactions"]["event_timestamp"] >= DRIFT_START]
    drifted = drifted_frames["transactions"]
    drifted = drifted[drifted["event_timestamp"] >= DRIFT_START]
    assert drifted["amount"].mean() > 1.2 * plain["amount"].mean()
    assert (drifted["channel"] == "mobile_money").mean() > (
        plain["channel"] == "mobile_money"
    ).mean()
    assert (drifted["region"] == "accra").mean() > (plain["region"] == "accra").mean() + 0.05
    assert (drifted["hour_of_day"] < 6).mean() > (plain["hour_of_day"] < 6).mean() + 0.03
    assert drifted["is_fraud"].mean() > plain["is_fraud"].mean()


def test_zero_drift_strength_changes_nothing(frames: dict[str, pd.DataFrame]) -> None:
    unchanged = generate_frames(
        n_transactions=N_TRANSACTIONS,
        seed=SEED,
        days=DAYS,
        drift_start="2026-03-01",
        drift_strength=0.0,
    )
    pd.testing.assert_frame_equal(frames["transactions"], unchanged["transactions"])


def test_generate_writes_readable_parquet(tmp_path: Path, frames: dict[str, pd.DataFrame]) -> None:
    outputs = _outputs(tmp_path)
    counts = generate(outputs, n_transactions=N_TRANSACTIONS, seed=SEED, days=DAYS)
    assert counts == {table: len(frames[table]) for table in TABLES}
    for table, path in outputs.items():
        written = pq.read_table(path)
        assert written.num_rows == counts[table]
        assert written.schema.remove_metadata().equals(TABLE_SCHEMAS[table])
        pd.testing.assert_frame_equal(written.to_pandas(), frames[table])
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == sorted(
        f"{table}.parquet" for table in TABLES
    )


def test_unknown_table_name_is_rejected(tmp_path: Path) -> None:
    outputs = {**_outputs(tmp_path), "transaktions": tmp_path / "typo.parquet"}
    with pytest.raises(ValueError, match=r"unknown table\(s\) \['transaktions'\]"):
        generate(outputs, n_transactions=1_000)
    assert not (tmp_path / "nested").exists()


def test_missing_table_name_is_rejected(tmp_path: Path) -> None:
    outputs = _outputs(tmp_path)
    del outputs["merchant_profile"]
    with pytest.raises(ValueError, match=r"missing table\(s\) \['merchant_profile'\]"):
        generate(outputs, n_transactions=1_000)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_transactions": 999}, "n_transactions must be at least 1000, got 999"),
        ({"n_transactions": 10_000.0}, "n_transactions must be an integer"),
        ({"days": 29}, "days must be between 30 and 3650, got 29"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"n_customers": 10}, "n_customers must be between 100 and"),
        ({"n_merchants": 2}, "n_merchants must be between 8 and"),
        ({"start": "next tuesday"}, "start must be a date string"),
        ({"drift_start": "2025-12-31"}, "drift_start must fall inside the generated period"),
        ({"drift_start": "2026-01-01", "drift_strength": -0.5}, "drift_strength must be between"),
        ({"drift_strength": float("nan")}, "drift_strength must be between"),
    ],
)
def test_bad_parameters_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_frames(**{"n_transactions": 10_000, **overrides})  # type: ignore[arg-type]
