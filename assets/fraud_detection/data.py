"""Deterministic synthetic payments-fraud data for the shipped fraud-detection example.

The data imitates a West/East African fintech's card and mobile-money payments: customers in five
regions of unequal size pay merchants in eight categories, with daily and weekly seasonality, a
month-end payday bump and a mild growth trend. Fraud (about 1-2% of payments) is drawn from a
latent logistic model of features that are only partly observable through the published tables,
so a good model ranks it well without reaching a perfect score. Fraud labels arrive late, as
chargebacks do, and the daily statistics tables are stamped at the end of their day so that a
point-in-time join cannot leak same-day information.

Everything is vectorized numpy; randomness comes from independent streams spawned from one
`numpy.random.SeedSequence`, and every draw has a size that does not depend on the drift settings.
That is what makes the output byte-identical for a seed and leaves the rows before `drift_start`
identical to a run without drift: drift only transforms, with pre-drawn randomness, rows at or
after `drift_start`, and every derived quantity looks only backwards in time.

Timestamps are microseconds since the Unix epoch internally and `datetime64[us, UTC]` on output.
Hours (seasonality, night, `hour_of_day`) are UTC hours; the modelled regions are UTC+0 to UTC+3.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TABLES: tuple[str, ...] = (
    "transactions",
    "customer_profile",
    "customer_daily_stats",
    "merchant_daily_stats",
    "merchant_profile",
)

_TIMESTAMP = pa.timestamp("us", tz="UTC")

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "transactions": pa.schema(
        [
            ("transaction_id", pa.int64()),
            ("customer_id", pa.int64()),
            ("merchant_id", pa.int64()),
            ("event_timestamp", _TIMESTAMP),
            ("amount", pa.float64()),
            ("channel", pa.string()),
            ("hour_of_day", pa.int64()),
            ("is_international", pa.int64()),
            ("merchant_category", pa.string()),
            ("region", pa.string()),
            ("is_fraud", pa.int64()),
            ("label_timestamp", _TIMESTAMP),
        ]
    ),
    "customer_profile": pa.schema(
        [
            ("customer_id", pa.int64()),
            ("event_timestamp", _TIMESTAMP),
            ("region", pa.string()),
            ("age_years", pa.int64()),
            ("credit_limit", pa.float64()),
            ("kyc_level", pa.int64()),
            ("account_age_days", pa.int64()),
        ]
    ),
    "customer_daily_stats": pa.schema(
        [
            ("customer_id", pa.int64()),
            ("event_timestamp", _TIMESTAMP),
            ("txn_count_7d", pa.int64()),
            ("txn_amount_mean_7d", pa.float64()),
            ("txn_amount_max_7d", pa.float64()),
            ("distinct_merchants_7d", pa.int64()),
            ("night_txn_share_7d", pa.float64()),
        ]
    ),
    "merchant_daily_stats": pa.schema(
        [
            ("merchant_id", pa.int64()),
            ("event_timestamp", _TIMESTAMP),
            ("merchant_txn_count_7d", pa.int64()),
            ("merchant_amount_mean_7d", pa.float64()),
            ("merchant_fraud_rate_30d", pa.float64()),
        ]
    ),
    "merchant_profile": pa.schema(
        [
            ("merchant_id", pa.int64()),
            ("event_timestamp", _TIMESTAMP),
            ("merchant_category", pa.string()),
            ("merchant_region", pa.string()),
            ("merchant_risk_tier", pa.int64()),
        ]
    ),
}

REGIONS: tuple[str, ...] = ("lagos", "nairobi", "abuja", "accra", "mombasa")
_REGION_SHARE = np.array([0.36, 0.22, 0.16, 0.15, 0.11])
_REGION_SPEND = np.array([1.2, 1.1, 1.3, 1.0, 0.8])
# Mombasa is the slice with noticeably more fraud, so per-region evaluation has something to find.
_REGION_FRAUD_LOGIT = np.array([0.0, 0.1, -0.2, -0.1, 1.3])
# Kenyan customers pay by M-Pesa where others would tap a card.
_MOBILE_FIRST_REGIONS = np.array([False, True, False, False, True])
GROWING_REGION = "accra"

CATEGORIES: tuple[str, ...] = (
    "groceries",
    "electronics",
    "airtime",
    "transport",
    "utilities",
    "fashion",
    "gambling",
    "travel",
)
_CATEGORY_TXN_SHARE = np.array([0.25, 0.06, 0.20, 0.15, 0.10, 0.10, 0.09, 0.05])
_CATEGORY_AMOUNT = np.array([1.0, 6.0, 0.25, 0.4, 1.5, 2.0, 0.8, 8.0])
_CATEGORY_RISK = np.array([-0.5, 0.6, -0.3, -0.4, -0.6, 0.0, 0.9, 0.7])
# Before drift, airtime is a low-risk category; the drift's new fraud ring targets it.
FRAUD_RING_CATEGORY = "airtime"

CHANNELS: tuple[str, ...] = ("card_present", "online", "mobile_money")
_CARD_PRESENT, _ONLINE, _MOBILE_MONEY = 0, 1, 2
_CATEGORY_CHANNEL = np.array(
    [
        [0.60, 0.05, 0.35],
        [0.35, 0.50, 0.15],
        [0.05, 0.15, 0.80],
        [0.30, 0.10, 0.60],
        [0.10, 0.40, 0.50],
        [0.50, 0.35, 0.15],
        [0.05, 0.55, 0.40],
        [0.20, 0.70, 0.10],
    ]
)

# Relative payment volume by UTC hour, Monday-first weekday, and the month-end payday window.
_HOURLY_PROFILE = np.array(
    [
        *(0.25, 0.15, 0.10, 0.10, 0.15, 0.30, 0.60, 1.00, 1.30, 1.40, 1.40, 1.50),
        *(1.60, 1.50, 1.40, 1.40, 1.50, 1.60, 1.70, 1.60, 1.30, 1.00, 0.70, 0.45),
    ]
)
_WEEKDAY_PROFILE = np.array([0.95, 0.95, 1.00, 1.00, 1.20, 1.25, 0.90])
_PAYDAY_BOOST = 1.15
_NIGHT_END_HOUR = 6  # hours 0-5 UTC count as night, in the fraud model and in night_txn_share_7d

_FRAUD_INTERCEPT = -7.9
_LEGIT_LABEL_DELAY_DAYS = 30  # a legitimate payment is known good when the chargeback window closes
_MAX_FRAUD_DELAY_DAYS = 45

_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3_600 * _US_PER_SECOND
_US_PER_DAY = 24 * _US_PER_HOUR

_MIN_TRANSACTIONS = 1_000
_MIN_DAYS = 30
_MAX_DAYS = 3_650
_MIN_CUSTOMERS = 100
_MIN_MERCHANTS = len(CATEGORIES)
_MAX_DRIFT_STRENGTH = 5.0


@dataclass(frozen=True)
class _Settings:
    """Validated parameters, with times as microseconds since the epoch."""

    n_transactions: int
    seed: int
    start_us: int
    end_us: int
    days: int
    n_customers: int
    n_merchants: int
    drift_start_us: int | None
    drift_strength: float


def generate(
    outputs: Mapping[str, str | os.PathLike],
    *,
    n_transactions: int = 100_000,
    seed: int = 7,
    start: str = "2026-01-01",
    days: int = 180,
    n_customers: int | None = None,
    n_merchants: int | None = None,
    drift_start: str | None = None,
    drift_strength: float = 1.0,
) -> dict[str, int]:
    """Generate the five fraud-detection tables and write each to its parquet file.

    Each file is written to a temporary file in the target directory and then moved into place,
    so a reader never sees a half-written file. Parent directories are created as needed.

    Args:
        outputs: Table name to parquet file path, for exactly the names in `TABLES`.
        n_transactions: Number of payments, at least 1,000.
        seed: Seed for all randomness; the same seed gives identical data.
        start: First instant of the period (a date or timestamp, UTC unless it says otherwise).
        days: Length of the period in days, 30 to 3,650.
        n_customers: Customer count; defaults to about one customer per 20 payments.
        n_merchants: Merchant count; defaults to about one merchant per 200 payments.
        drift_start: If set, payments at or after this instant drift (see `generate_frames`).
        drift_strength: Size of the drift, 0 (none) to 5; 1 is the reference drift.

    Returns:
        Row count per table name.

    Raises:
        ValueError: If a table name is unknown or missing, a path is invalid, or a parameter is
            out of range.
    """
    paths = _validate_outputs(outputs)
    frames = generate_frames(
        n_transactions=n_transactions,
        seed=seed,
        start=start,
        days=days,
        n_customers=n_customers,
        n_merchants=n_merchants,
        drift_start=drift_start,
        drift_strength=drift_strength,
    )
    for table in TABLES:
        _write_parquet_atomically(frames[table], TABLE_SCHEMAS[table], paths[table])
    return {table: len(frames[table]) for table in TABLES}


def generate_frames(
    *,
    n_transactions: int = 100_000,
    seed: int = 7,
    start: str = "2026-01-01",
    days: int = 180,
    n_customers: int | None = None,
    n_merchants: int | None = None,
    drift_start: str | None = None,
    drift_strength: float = 1.0,
) -> dict[str, pd.DataFrame]:
    """Generate the five fraud-detection tables in memory.

    Drift, when `drift_start` is set, changes only payments at or after it: amounts scale by
    about 1.6 ** drift_strength, the channel mix moves toward mobile money, customers from
    `GROWING_REGION` make a larger share of payments, more payments happen at night, and a new
    fraud ring targets mobile-money payments in `FRAUD_RING_CATEGORY`. Everything before
    `drift_start` is identical to a run without drift.

    Transactions are sorted by `event_timestamp`, with `transaction_id` counting up in that
    order; the profile and daily-statistics tables are sorted by id, then time. About 1.3% of
    payments are fraud without drift. Night means 00:00-05:59 UTC. `distinct_merchants_7d` is
    exact, not approximated.

    Args:
        n_transactions: Number of payments, at least 1,000.
        seed: Seed for all randomness; the same seed gives identical data.
        start: First instant of the period (a date or timestamp, UTC unless it says otherwise).
        days: Length of the period in days, 30 to 3,650.
        n_customers: Customer count; defaults to about one customer per 20 payments.
        n_merchants: Merchant count; defaults to about one merchant per 200 payments.
        drift_start: If set, payments at or after this instant drift.
        drift_strength: Size of the drift, 0 (none) to 5; 1 is the reference drift.

    Returns:
        Table name to DataFrame, with the columns and dtypes of `TABLE_SCHEMAS`.

    Raises:
        ValueError: If a parameter is out of range.
    """
    settings = _validate_settings(
        n_transactions=n_transactions,
        seed=seed,
        start=start,
        days=days,
        n_customers=n_customers,
        n_merchants=n_merchants,
        drift_start=drift_start,
        drift_strength=drift_strength,
    )
    # Independent streams, so that how one part draws cannot shift another part's numbers.
    names = ("customers", "merchants", "regular", "episodes", "rows", "drift")
    children = np.random.SeedSequence(settings.seed).spawn(len(names))
    streams: dict[str, np.random.Generator] = {
        name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)
    }
    customers = _draw_customers(settings, streams["customers"])
    merchants = _draw_merchants(settings, streams["merchants"])
    payments = _draw_payments(settings, customers, merchants, streams)
    return {
        "transactions": _transactions_frame(payments),
        "customer_profile": _customer_profile_frame(customers),
        "customer_daily_stats": _customer_daily_stats_frame(settings, payments),
        "merchant_daily_stats": _merchant_daily_stats_frame(settings, payments),
        "merchant_profile": _merchant_profile_frame(merchants),
    }


def _validate_outputs(outputs: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    if not isinstance(outputs, Mapping):
        raise ValueError(
            f"outputs must map table names to parquet paths, got {type(outputs).__name__}"
        )
    unknown = sorted(str(name) for name in outputs if name not in TABLES)
    missing = [name for name in TABLES if name not in outputs]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown table(s) {unknown}")
        if missing:
            problems.append(f"missing table(s) {missing}")
        raise ValueError(
            f"outputs has {' and '.join(problems)}; pass exactly these tables: {list(TABLES)}"
        )
    paths: dict[str, Path] = {}
    for name in TABLES:
        value = outputs[name]
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise ValueError(f"outputs[{name!r}] must be a parquet file path, got {value!r}")
        paths[name] = Path(os.fspath(value))
    resolved = [path.resolve() for path in paths.values()]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"outputs must name a different file for each table, got {outputs!r}")
    return paths


def _validate_settings(
    *,
    n_transactions: int,
    seed: int,
    start: str,
    days: int,
    n_customers: int | None,
    n_merchants: int | None,
    drift_start: str | None,
    drift_strength: float,
) -> _Settings:
    n = _require_int("n_transactions", n_transactions, minimum=_MIN_TRANSACTIONS)
    seed = _require_int("seed", seed, minimum=0)
    days = _require_int("days", days, minimum=_MIN_DAYS, maximum=_MAX_DAYS)
    if n_customers is None:
        n_customers = max(_MIN_CUSTOMERS, n // 20)
    n_customers = _require_int("n_customers", n_customers, minimum=_MIN_CUSTOMERS, maximum=n)
    if n_merchants is None:
        n_merchants = max(4 * _MIN_MERCHANTS, n // 200)
    n_merchants = _require_int("n_merchants", n_merchants, minimum=_MIN_MERCHANTS, maximum=n)
    start_us = _parse_instant("start", start)
    end_us = start_us + days * _US_PER_DAY
    drift_start_us = None
    if drift_start is not None:
        drift_start_us = _parse_instant("drift_start", drift_start)
        if not start_us <= drift_start_us < end_us:
            raise ValueError(
                f"drift_start must fall inside the generated period [{start}, start + {days} days),"
                f" got {drift_start!r}"
            )
    if isinstance(drift_strength, bool) or not isinstance(drift_strength, int | float):
        raise ValueError(f"drift_strength must be a number, got {drift_strength!r}")
    if not (math.isfinite(drift_strength) and 0.0 <= drift_strength <= _MAX_DRIFT_STRENGTH):
        raise ValueError(
            f"drift_strength must be between 0 and {_MAX_DRIFT_STRENGTH}, got {drift_strength!r}"
        )
    return _Settings(
        n_transactions=n,
        seed=seed,
        start_us=start_us,
        end_us=end_us,
        days=days,
        n_customers=n_customers,
        n_merchants=n_merchants,
        drift_start_us=drift_start_us,
        drift_strength=float(drift_strength),
    )


def _require_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _parse_instant(name: str, value: object) -> int:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a date string such as '2026-01-01', got {value!r}")
    try:
        instant = pd.Timestamp(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name} must be a date string such as '2026-01-01', got {value!r}"
        ) from error
    if instant is pd.NaT:
        raise ValueError(f"{name} must be a date string such as '2026-01-01', got {value!r}")
    instant = instant.tz_localize("UTC") if instant.tzinfo is None else instant.tz_convert("UTC")
    return int(instant.value // 1_000)


@dataclass(frozen=True)
class _Customers:
    region: np.ndarray
    age_years: np.ndarray
    kyc_level: np.ndarray
    credit_limit: np.ndarray
    signup_us: np.ndarray
    activity: np.ndarray
    log_spend: np.ndarray
    susceptibility: np.ndarray
    has_update: np.ndarray
    update_us: np.ndarray
    updated_kyc_level: np.ndarray
    updated_credit_limit: np.ndarray


def _draw_customers(settings: _Settings, rng: np.random.Generator) -> _Customers:
    n = settings.n_customers
    region = rng.choice(len(REGIONS), size=n, p=_REGION_SHARE)
    age_years = np.clip(np.rint(18 + rng.gamma(2.0, 8.0, size=n)), 18, 85).astype(np.int64)
    kyc_level = rng.choice(np.array([1, 2, 3], dtype=np.int64), size=n, p=[0.30, 0.45, 0.25])
    base_limit = np.array([0.0, 200.0, 1_000.0, 5_000.0])[kyc_level]
    credit_limit = _round_to_tens(base_limit * rng.lognormal(0.0, 0.5, size=n))
    # Most customers signed up in the two years before the period; some join during its first
    # 60%, which leaves every customer time to transact and gives the model new accounts.
    joins_during_period = rng.random(n) < 0.12
    before = settings.start_us - (rng.random(n) * 730 * _US_PER_DAY).astype(np.int64)
    during = settings.start_us + (rng.random(n) * 0.6 * settings.days * _US_PER_DAY).astype(
        np.int64
    )
    signup_us = np.where(joins_during_period, during, before)
    activity = rng.lognormal(0.0, 0.9, size=n)
    log_spend = np.log(20.0 * _REGION_SPEND[region]) + rng.normal(0.0, 0.5, size=n)
    susceptibility = rng.normal(0.0, 0.3, size=n)
    update_us = signup_us + ((30 + rng.random(n) * 370) * _US_PER_DAY).astype(np.int64)
    has_update = (rng.random(n) < 0.3) & (update_us < settings.end_us)
    updated_kyc_level = np.where(rng.random(n) < 0.4, np.minimum(kyc_level + 1, 3), kyc_level)
    updated_credit_limit = _round_to_tens(credit_limit * rng.uniform(1.3, 2.0, size=n))
    return _Customers(
        region=region,
        age_years=age_years,
        kyc_level=kyc_level,
        credit_limit=credit_limit,
        signup_us=signup_us,
        activity=activity,
        log_spend=log_spend,
        susceptibility=susceptibility,
        has_update=has_update,
        update_us=update_us,
        updated_kyc_level=updated_kyc_level,
        updated_credit_limit=updated_credit_limit,
    )


@dataclass(frozen=True)
class _Merchants:
    category: np.ndarray
    region: np.ndarray
    popularity: np.ndarray
    latent_risk: np.ndarray
    risk_tier: np.ndarray
    onboarded_us: np.ndarray


def _draw_merchants(settings: _Settings, rng: np.random.Generator) -> _Merchants:
    n = settings.n_merchants
    # Exact allocation so every category and region has merchants, however few there are.
    category_counts = _allocate(n, _CATEGORY_TXN_SHARE)
    category = rng.permutation(np.repeat(np.arange(len(CATEGORIES)), category_counts))
    region = rng.permutation(np.repeat(np.arange(len(REGIONS)), _allocate(n, _REGION_SHARE)))
    # A few small collusive merchants carry far more fraud than their category suggests.
    collusive = rng.random(n) < 0.03
    popularity = (
        rng.lognormal(0.0, 1.0, size=n)
        * np.where(collusive, 0.3, 1.0)
        * _CATEGORY_TXN_SHARE[category]
        / category_counts[category]
    )
    latent_risk = _CATEGORY_RISK[category] + rng.normal(0.0, 0.6, size=n) + 2.0 * collusive
    observed_risk = latent_risk + rng.normal(0.0, 0.7, size=n)
    tier_cuts = np.quantile(observed_risk, [0.55, 0.85])
    risk_tier = (1 + (observed_risk > tier_cuts[0]) + (observed_risk > tier_cuts[1])).astype(
        np.int64
    )
    # Within two years of the start, like customer signups, so a profile stays inside a 1000-day
    # feature TTL throughout a default-length period.
    onboarded_us = settings.start_us - ((30 + rng.random(n) * 700) * _US_PER_DAY).astype(np.int64)
    return _Merchants(
        category=category,
        region=region,
        popularity=popularity,
        latent_risk=latent_risk,
        risk_tier=risk_tier,
        onboarded_us=onboarded_us,
    )


@dataclass(frozen=True)
class _Payments:
    """One entry per payment, sorted by time."""

    customer: np.ndarray
    merchant: np.ndarray
    timestamp_us: np.ndarray
    amount_cents: np.ndarray
    channel: np.ndarray
    hour_of_day: np.ndarray
    is_international: np.ndarray
    category: np.ndarray
    region: np.ndarray
    is_fraud: np.ndarray
    label_timestamp_us: np.ndarray


def _draw_payments(
    settings: _Settings,
    customers: _Customers,
    merchants: _Merchants,
    streams: dict[str, np.random.Generator],
) -> _Payments:
    n = settings.n_transactions
    s = settings.drift_strength
    hour_cdf = _hour_cdf(settings)
    n_hours = len(hour_cdf) - 1
    first_hour = np.where(
        customers.signup_us >= settings.start_us,
        (customers.signup_us - settings.start_us) // _US_PER_HOUR + 1,
        0,
    ).clip(0, n_hours - 1)
    # A customer who joins mid-period has proportionally less of the period to transact in.
    weight = customers.activity * (1.0 - hour_cdf[first_hour])

    # Account-takeover episodes: short bursts of risky payments on a compromised account.
    episode_rows_target = max(1, round(0.006 * n))
    rng = streams["episodes"]
    episode_sizes = 2 + rng.poisson(2.0, size=episode_rows_target)
    n_episodes = max(
        1, int(np.searchsorted(np.cumsum(episode_sizes), episode_rows_target, "right"))
    )
    episode_weight = customers.activity * np.where(customers.kyc_level == 1, 2.0, 1.0)
    episode_customer = _weighted_pick(episode_weight, rng.random(episode_rows_target))[:n_episodes]
    earliest = np.maximum(customers.signup_us, settings.start_us) + _US_PER_HOUR
    latest = settings.end_us - 2 * _US_PER_DAY
    episode_start = earliest[episode_customer] + (
        rng.random(episode_rows_target)[:n_episodes]
        * (latest - earliest[episode_customer]).clip(min=0)
    ).astype(np.int64)
    episode_of_row = np.repeat(np.arange(n_episodes), episode_sizes[:n_episodes])
    n_episode_rows = len(episode_of_row)
    episode_offset = rng.integers(0, 36 * _US_PER_HOUR, size=int(episode_sizes.sum()))

    n_regular = n - n_episode_rows
    rng = streams["regular"]
    regular_customer = _weighted_pick(weight, rng.random(n_regular))
    low = hour_cdf[first_hour[regular_customer]]
    hour_slot = np.searchsorted(hour_cdf, low + rng.random(n_regular) * (1.0 - low), "right") - 1
    hour_slot = hour_slot.clip(first_hour[regular_customer], n_hours - 1)
    regular_us = (
        settings.start_us + hour_slot * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, size=n_regular)
    )

    customer = np.concatenate([regular_customer, episode_customer[episode_of_row]])
    timestamp_us = np.concatenate(
        [regular_us, episode_start[episode_of_row] + episode_offset[:n_episode_rows]]
    )
    in_episode = np.arange(n) >= n_regular

    rng = streams["rows"]
    u_local = rng.random(n)
    u_other_region = rng.random(n)
    u_merchant = rng.random(n)
    u_channel = rng.random(n)
    u_mobile_first = rng.random(n)
    u_international = rng.random(n)
    amount_noise = rng.normal(0.0, 1.0, size=n)
    u_fraud = rng.random(n)
    fraud_delay_days = np.clip(1.0 + rng.gamma(1.2, 4.0, size=n), 1.0, _MAX_FRAUD_DELAY_DAYS)

    rng = streams["drift"]
    u_drift_region = rng.random(n)
    u_drift_region_pick = rng.random(n)
    u_drift_channel = rng.random(n)
    u_drift_night = rng.random(n)
    u_drift_night_hour = rng.random(n)

    drifted = np.zeros(n, dtype=bool)
    if settings.drift_start_us is not None:
        drifted = timestamp_us >= settings.drift_start_us
        growing = np.flatnonzero(customers.region == REGIONS.index(GROWING_REGION))
        moved = drifted & ~in_episode & (u_drift_region < min(0.2 * s, 0.95))
        if growing.size and moved.any():
            newcomer = growing[
                _weighted_pick(customers.activity[growing], u_drift_region_pick[moved])
            ]
            joined = customers.signup_us[newcomer] < timestamp_us[moved]
            customer[moved] = np.where(joined, newcomer, customer[moved])

    region = customers.region[customer]
    merchant_region = np.where(
        u_local < 0.85,
        region,
        _weighted_pick(np.bincount(merchants.region, merchants.popularity), u_other_region),
    )
    merchant = np.empty(n, dtype=np.int64)
    for code in range(len(REGIONS)):
        here = merchant_region == code
        candidates = np.flatnonzero(merchants.region == code)
        merchant[here] = candidates[
            _weighted_pick(merchants.popularity[candidates], u_merchant[here])
        ]
    category = merchants.category[merchant]

    channel_cdf = np.cumsum(_CATEGORY_CHANNEL, axis=1)[category]
    channel = (u_channel > channel_cdf[:, 0]).astype(np.int64) + (u_channel > channel_cdf[:, 1])
    channel = np.where(
        _MOBILE_FIRST_REGIONS[region] & (channel == _CARD_PRESENT) & (u_mobile_first < 0.35),
        _MOBILE_MONEY,
        channel,
    )
    # Account takeovers happen remotely, rarely at a till.
    episode_channel = np.where(
        u_channel < 0.6, _ONLINE, np.where(u_channel < 0.95, _MOBILE_MONEY, 0)
    )
    channel = np.where(in_episode, episode_channel, channel)
    channel = np.where(drifted & (u_drift_channel < min(0.25 * s, 0.95)), _MOBILE_MONEY, channel)

    international_rate = (
        0.003
        + 0.02 * (channel == _ONLINE)
        + 0.12 * (category == CATEGORIES.index("travel"))
        + 0.03 * in_episode
    )
    is_international = (u_international < international_rate).astype(np.int64)

    if settings.drift_start_us is not None:
        at_night = drifted & (u_drift_night < min(0.12 * s, 0.95))
        night_hour = (u_drift_night_hour * _NIGHT_END_HOUR).astype(np.int64)
        shifted = (
            timestamp_us
            - timestamp_us % _US_PER_DAY
            + night_hour * _US_PER_HOUR
            + timestamp_us % _US_PER_HOUR
        )
        # Keep the shift inside the drift window, the period, and the customer's membership.
        at_night &= (
            (shifted >= settings.drift_start_us)
            & (shifted < settings.end_us)
            & (shifted > customers.signup_us[customer])
        )
        timestamp_us = np.where(at_night, shifted, timestamp_us)
    hour_of_day = (timestamp_us // _US_PER_HOUR) % 24

    # Fraudsters push amounts well above what the customer usually spends.
    surprise = amount_noise + 1.2 * in_episode
    log_amount = customers.log_spend[customer] + np.log(_CATEGORY_AMOUNT[category]) + 0.6 * surprise
    # Drift inflates every amount, as a currency devaluation would; the fraud pattern keys on the
    # amount relative to the customer's own (equally inflated) spending, so it does not move.
    log_amount = log_amount + drifted * (math.log(1.6) * s)
    amount_cents = np.maximum(np.rint(np.exp(log_amount) * 100.0), 50).astype(np.int64)

    account_age_days = (timestamp_us - customers.signup_us[customer]) / _US_PER_DAY
    updated = customers.has_update[customer] & (timestamp_us >= customers.update_us[customer])
    kyc_level = np.where(
        updated, customers.updated_kyc_level[customer], customers.kyc_level[customer]
    )
    burst = np.log1p(_recent_payment_count(settings, customer, timestamp_us)) - np.log1p(
        _expected_weekly_payments(n_regular, weight, first_hour, n_hours)[customer]
    )
    ring = (
        drifted & (category == CATEGORIES.index(FRAUD_RING_CATEGORY)) & (channel == _MOBILE_MONEY)
    )
    logit = (
        _FRAUD_INTERCEPT
        + 0.6 * surprise
        + 1.5 * np.maximum(surprise - 1.2, 0.0)
        + 1.8 * (hour_of_day < _NIGHT_END_HOUR)
        + 0.6 * (hour_of_day >= 22)
        + np.array([0.0, 1.6, 0.9])[channel]
        + 2.2 * is_international
        + 1.0 * merchants.latent_risk[merchant]
        + np.array([0.0, 1.2, 0.5, 0.0])[kyc_level]
        + 2.0 * np.exp(-account_age_days / 30.0)
        + 1.0 * np.maximum(burst, 0.0)
        + _REGION_FRAUD_LOGIT[region]
        + customers.susceptibility[customer]
        + 3.5 * in_episode
        + 2.0 * s * ring
    )
    is_fraud = (u_fraud < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    label_delay_us = np.where(
        is_fraud == 1,
        np.rint(fraud_delay_days * _US_PER_DAY).astype(np.int64),
        _LEGIT_LABEL_DELAY_DAYS * _US_PER_DAY,
    )

    # Stable sort: ties keep generation order, and rows before drift_start sort identically.
    order = np.argsort(timestamp_us, kind="stable")
    return _Payments(
        customer=customer[order],
        merchant=merchant[order],
        timestamp_us=timestamp_us[order],
        amount_cents=amount_cents[order],
        channel=channel[order],
        hour_of_day=hour_of_day[order],
        is_international=is_international[order],
        category=category[order],
        region=region[order],
        is_fraud=is_fraud[order],
        label_timestamp_us=(timestamp_us + label_delay_us)[order],
    )


def _hour_cdf(settings: _Settings) -> np.ndarray:
    """Cumulative share of payment volume at the start of each hour of the period (0 ... 1)."""
    n_hours = settings.days * 24
    hour_start = settings.start_us + np.arange(n_hours, dtype=np.int64) * _US_PER_HOUR
    day = hour_start // _US_PER_DAY
    calendar_day = hour_start.astype("datetime64[us]").astype("datetime64[D]")
    day_of_month = (calendar_day - calendar_day.astype("datetime64[M]")).astype(np.int64) + 1
    intensity = (
        _HOURLY_PROFILE[(hour_start // _US_PER_HOUR) % 24]
        # 1970-01-01 was a Thursday, weekday 3 when Monday is 0.
        * _WEEKDAY_PROFILE[(day + 3) % 7]
        * np.where((day_of_month >= 25) | (day_of_month <= 2), _PAYDAY_BOOST, 1.0)
        * np.linspace(1.0, 1.2, n_hours)
    )
    cdf = np.concatenate([[0.0], np.cumsum(intensity)])
    return cdf / cdf[-1]


def _recent_payment_count(
    settings: _Settings, customer: np.ndarray, timestamp_us: np.ndarray
) -> np.ndarray:
    """Count each customer's payments in the 7 days before each payment, at second resolution.

    Each payment covers the week starting the second after it, so a payment counts neither
    itself nor anything in its own second; that keeps the count strictly backward-looking, which
    the drift guarantee relies on.
    """
    seconds = (timestamp_us - settings.start_us) // _US_PER_SECOND
    return _count_covering(
        customer,
        seconds + 1,
        seconds + 1 + 7 * 86_400,
        customer,
        seconds,
        width=(settings.days + 8) * 86_400,
    )


def _expected_weekly_payments(
    n_regular: int, weight: np.ndarray, first_hour: np.ndarray, n_hours: int
) -> np.ndarray:
    active_weeks = (n_hours - first_hour) / (24 * 7)
    return n_regular * weight / weight.sum() / active_weeks


def _count_covering(
    group: np.ndarray,
    begin: np.ndarray,
    end: np.ndarray,
    query_group: np.ndarray,
    query_at: np.ndarray,
    *,
    width: int,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Sum the weights of the intervals [begin, end) of the same group that contain each query.

    A sweep: +weight at each begin and -weight at each end, sorted by (group, position), so the
    running sum just after a query's position is the answer. Every interval closes inside its
    group's key range, so earlier groups add nothing. `width` must exceed every position.
    """
    if weight is None:
        weight = np.ones(len(group), dtype=np.int64)
    keys = np.concatenate([group * width + begin, group * width + end])
    steps = np.concatenate([weight, -weight])
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    running = np.cumsum(steps[order])
    position = np.searchsorted(keys, query_group * width + query_at, "right") - 1
    return np.where(position >= 0, running[position.clip(min=0)], 0)


def _day_groups(group: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by (group, day) and return that order and the start of each (group, day)."""
    order = np.lexsort((day, group))
    group, day = group[order], day[order]
    first = np.concatenate([[True], (group[1:] != group[:-1]) | (day[1:] != day[:-1])])
    return order, np.flatnonzero(first)


def _trailing_sum(group: np.ndarray, day: np.ndarray, values: np.ndarray, days: int) -> np.ndarray:
    """Sum daily values over the `days` days ending each row's day, rows sorted by (group, day).

    Each (group, day) appears once, so the window holds at most `days` consecutive rows.
    """
    total = values.copy()
    for lag in range(1, days):
        same = (group[lag:] == group[:-lag]) & (day[:-lag] > day[lag:] - days)
        total[lag:] += np.where(same, values[:-lag], 0)
    return total


def _trailing_max(group: np.ndarray, day: np.ndarray, values: np.ndarray, days: int) -> np.ndarray:
    """Like `_trailing_sum`, for the maximum."""
    best = values.copy()
    for lag in range(1, days):
        same = (group[lag:] == group[:-lag]) & (day[:-lag] > day[lag:] - days)
        best[lag:] = np.where(same, np.maximum(best[lag:], values[:-lag]), best[lag:])
    return best


def _customer_daily_stats_frame(settings: _Settings, payments: _Payments) -> pd.DataFrame:
    day = payments.timestamp_us // _US_PER_DAY
    first_day = settings.start_us // _US_PER_DAY
    relative_day = day - first_day
    order, first = _day_groups(payments.customer, relative_day)
    customer = payments.customer[order][first]
    active_day = relative_day[order][first]
    cents = payments.amount_cents[order]
    count = np.diff(np.append(first, len(order)))
    count_7d = _trailing_sum(customer, active_day, count, 7)
    cents_7d = _trailing_sum(customer, active_day, np.add.reduceat(cents, first), 7)
    max_cents_7d = _trailing_max(customer, active_day, np.maximum.reduceat(cents, first), 7)
    is_night = (payments.hour_of_day[order] < _NIGHT_END_HOUR).astype(np.int64)
    night_7d = _trailing_sum(customer, active_day, np.add.reduceat(is_night, first), 7)

    # Exact distinct count: each (customer, merchant, day) covers the 7 days from that day up to
    # the pair's next active day, so the pairs active in a window are the intervals covering it.
    pair_order = np.lexsort((relative_day, payments.merchant, payments.customer))
    pair_customer = payments.customer[pair_order]
    pair_merchant = payments.merchant[pair_order]
    pair_day = relative_day[pair_order]
    new = np.concatenate(
        [
            [True],
            (pair_customer[1:] != pair_customer[:-1])
            | (pair_merchant[1:] != pair_merchant[:-1])
            | (pair_day[1:] != pair_day[:-1]),
        ]
    )
    pair_customer, pair_merchant, pair_day = pair_customer[new], pair_merchant[new], pair_day[new]
    same_pair_next = np.append(
        (pair_customer[1:] == pair_customer[:-1]) & (pair_merchant[1:] == pair_merchant[:-1]),
        False,
    )
    next_day = np.append(pair_day[1:], 0)
    covered_until = np.where(same_pair_next, np.minimum(pair_day + 7, next_day), pair_day + 7)
    distinct_7d = _count_covering(
        pair_customer,
        pair_day,
        covered_until,
        customer,
        active_day,
        width=settings.days + 16,
    )
    return pd.DataFrame(
        {
            "customer_id": customer + 1,
            "event_timestamp": _utc(_day_end_us(active_day + first_day)),
            "txn_count_7d": count_7d,
            "txn_amount_mean_7d": cents_7d / count_7d / 100.0,
            "txn_amount_max_7d": max_cents_7d / 100.0,
            "distinct_merchants_7d": distinct_7d.astype(np.int64),
            "night_txn_share_7d": night_7d / count_7d,
        }
    )


def _merchant_daily_stats_frame(settings: _Settings, payments: _Payments) -> pd.DataFrame:
    first_day = settings.start_us // _US_PER_DAY
    event_day = payments.timestamp_us // _US_PER_DAY - first_day
    order, first = _day_groups(payments.merchant, event_day)
    merchant = payments.merchant[order][first]
    active_day = event_day[order][first]
    count = np.diff(np.append(first, len(order)))
    count_7d = _trailing_sum(merchant, active_day, count, 7)
    cents_7d = _trailing_sum(
        merchant, active_day, np.add.reduceat(payments.amount_cents[order], first), 7
    )

    # A payment is in day d's 30-day window for d in [event_day, event_day + 30); a fraud label
    # counts from the day it became known, so fraud covers [label_day, event_day + 30). A label
    # known at or before day d's end has label_day <= d, because the stats row is stamped then.
    width = settings.days + 2 * _MAX_FRAUD_DELAY_DAYS + 8
    window_count = _count_covering(
        payments.merchant, event_day, event_day + 30, merchant, active_day, width=width
    )
    fraud = payments.is_fraud == 1
    label_day = payments.label_timestamp_us[fraud] // _US_PER_DAY - first_day
    known = label_day < event_day[fraud] + 30
    known_fraud = _count_covering(
        payments.merchant[fraud][known],
        label_day[known],
        event_day[fraud][known] + 30,
        merchant,
        active_day,
        width=width,
    )
    return pd.DataFrame(
        {
            "merchant_id": merchant + 1,
            "event_timestamp": _utc(_day_end_us(active_day + first_day)),
            "merchant_txn_count_7d": count_7d,
            "merchant_amount_mean_7d": cents_7d / count_7d / 100.0,
            "merchant_fraud_rate_30d": known_fraud / window_count,
        }
    )


def _transactions_frame(payments: _Payments) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": np.arange(1, len(payments.customer) + 1, dtype=np.int64),
            "customer_id": payments.customer + 1,
            "merchant_id": payments.merchant + 1,
            "event_timestamp": _utc(payments.timestamp_us),
            "amount": payments.amount_cents / 100.0,
            "channel": _labels(CHANNELS, payments.channel),
            "hour_of_day": payments.hour_of_day.astype(np.int64),
            "is_international": payments.is_international,
            "merchant_category": _labels(CATEGORIES, payments.category),
            "region": _labels(REGIONS, payments.region),
            "is_fraud": payments.is_fraud,
            "label_timestamp": _utc(payments.label_timestamp_us),
        }
    )


def _customer_profile_frame(customers: _Customers) -> pd.DataFrame:
    n = len(customers.region)
    updated = np.flatnonzero(customers.has_update)
    customer = np.concatenate([np.arange(n), updated])
    timestamp_us = np.concatenate([customers.signup_us, customers.update_us[updated]])
    account_age_days = (
        np.concatenate(
            [
                np.zeros(n, dtype=np.int64),
                (customers.update_us[updated] - customers.signup_us[updated]),
            ]
        )
        // _US_PER_DAY
    )
    order = np.lexsort((timestamp_us, customer))
    return pd.DataFrame(
        {
            "customer_id": (customer + 1)[order],
            "event_timestamp": _utc(timestamp_us[order]),
            "region": _labels(REGIONS, customers.region[customer][order]),
            "age_years": (customers.age_years[customer] + account_age_days * 4 // 1461)[order],
            "credit_limit": np.concatenate(
                [customers.credit_limit, customers.updated_credit_limit[updated]]
            )[order],
            "kyc_level": np.concatenate(
                [customers.kyc_level, customers.updated_kyc_level[updated]]
            )[order],
            "account_age_days": account_age_days[order],
        }
    )


def _merchant_profile_frame(merchants: _Merchants) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "merchant_id": np.arange(1, len(merchants.category) + 1, dtype=np.int64),
            "event_timestamp": _utc(merchants.onboarded_us),
            "merchant_category": _labels(CATEGORIES, merchants.category),
            "merchant_region": _labels(REGIONS, merchants.region),
            "merchant_risk_tier": merchants.risk_tier,
        }
    )


def _write_parquet_atomically(frame: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _weighted_pick(weight: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Map uniforms in [0, 1) to indices drawn with probability proportional to `weight`."""
    cumulative = np.cumsum(weight)
    picked = np.searchsorted(cumulative, uniform * cumulative[-1], "right")
    return picked.clip(max=len(weight) - 1)


def _allocate(total: int, share: np.ndarray) -> np.ndarray:
    """Split `total` into integer counts close to `share`, each at least 1 (largest remainder)."""
    spare = total - len(share)
    raw = spare * share / share.sum()
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(counts - raw, kind="stable")[: spare - counts.sum()]] += 1
    return counts + 1


def _round_to_tens(values: np.ndarray) -> np.ndarray:
    return np.maximum(np.rint(values / 10.0) * 10.0, 10.0)


def _day_end_us(day: np.ndarray) -> np.ndarray:
    """Last microsecond of each UTC day, given days since the epoch."""
    return (day + 1) * _US_PER_DAY - 1


def _utc(microseconds: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(microseconds.astype("datetime64[us]")).tz_localize("UTC")


def _labels(names: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
    return np.asarray(names, dtype=object)[codes]
