"""The tables and their schemas, the vocabularies, the model's constants and validated settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

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
REGION_SHARE = np.array([0.36, 0.22, 0.16, 0.15, 0.11])
REGION_SPEND = np.array([1.2, 1.1, 1.3, 1.0, 0.8])
# Mombasa is the slice with noticeably more fraud, so per-region evaluation has something to find.
REGION_FRAUD_LOGIT = np.array([0.0, 0.1, -0.2, -0.1, 1.3])
# Kenyan customers pay by M-Pesa where others would tap a card.
MOBILE_FIRST_REGIONS = np.array([False, True, False, False, True])
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
CATEGORY_TXN_SHARE = np.array([0.25, 0.06, 0.20, 0.15, 0.10, 0.10, 0.09, 0.05])
CATEGORY_AMOUNT = np.array([1.0, 6.0, 0.25, 0.4, 1.5, 2.0, 0.8, 8.0])
CATEGORY_RISK = np.array([-0.5, 0.6, -0.3, -0.4, -0.6, 0.0, 0.9, 0.7])
# Before drift, airtime is a low-risk category; the drift's new fraud ring targets it.
FRAUD_RING_CATEGORY = "airtime"

CHANNELS: tuple[str, ...] = ("card_present", "online", "mobile_money")
CARD_PRESENT, ONLINE, MOBILE_MONEY = 0, 1, 2
CATEGORY_CHANNEL = np.array(
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
HOURLY_PROFILE = np.array(
    [
        *(0.25, 0.15, 0.10, 0.10, 0.15, 0.30, 0.60, 1.00, 1.30, 1.40, 1.40, 1.50),
        *(1.60, 1.50, 1.40, 1.40, 1.50, 1.60, 1.70, 1.60, 1.30, 1.00, 0.70, 0.45),
    ]
)
WEEKDAY_PROFILE = np.array([0.95, 0.95, 1.00, 1.00, 1.20, 1.25, 0.90])
PAYDAY_BOOST = 1.15
NIGHT_END_HOUR = 6  # hours 0-5 UTC count as night, in the fraud model and in night_txn_share_7d

FRAUD_INTERCEPT = -7.9
LEGIT_LABEL_DELAY_DAYS = 30  # a legitimate payment is known good when the chargeback window closes
MAX_FRAUD_DELAY_DAYS = 45

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR

_MIN_TRANSACTIONS = 1_000
_MIN_DAYS = 30
_MAX_DAYS = 3_650
_MIN_CUSTOMERS = 100
_MIN_MERCHANTS = len(CATEGORIES)
_MAX_DRIFT_STRENGTH = 5.0


@dataclass(frozen=True)
class Settings:
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


def validate_settings(
    *,
    n_transactions: int,
    seed: int,
    start: str,
    days: int,
    n_customers: int | None,
    n_merchants: int | None,
    drift_start: str | None,
    drift_strength: float,
) -> Settings:
    """Check the generator's parameters and fill in the defaults.

    Args:
        n_transactions: number of payments, at least 1,000.
        seed: seed for all randomness, 0 or more.
        start: first instant of the period (UTC unless it says otherwise).
        days: length of the period in days, 30 to 3,650.
        n_customers: customer count; None means about one customer per 20 payments.
        n_merchants: merchant count; None means about one merchant per 200 payments.
        drift_start: first instant of the drift, inside the period; None or "" for no drift
            (a spec can then turn drift on with ``"${SOME_VARIABLE:-}"``).
        drift_strength: size of the drift, 0 to 5.

    Returns:
        The settings, with times in microseconds since the epoch.

    Raises:
        ValueError: a parameter has the wrong type or is out of range; the message names it.
    """
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
    end_us = start_us + days * US_PER_DAY
    drift_start_us = None
    if drift_start is not None and drift_start != "":
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
    return Settings(
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


def day_end_us(day: np.ndarray) -> np.ndarray:
    """Last microsecond of each UTC day, given days since the epoch."""
    return (day + 1) * US_PER_DAY - 1


def utc(microseconds: np.ndarray) -> pd.DatetimeIndex:
    """Microseconds since the epoch as UTC timestamps (``datetime64[us, UTC]``)."""
    return pd.DatetimeIndex(microseconds.astype("datetime64[us]")).tz_localize("UTC")


def labels(names: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
    """The names of integer codes (an object array, for a string column)."""
    return np.asarray(names, dtype=object)[codes]
