"""The daily statistics tables of customers and merchants.

Each row holds a customer's or merchant's figures over the days up to and including one day on
which they had payments, and is stamped at that day's last microsecond, so a point-in-time join
sees it only from the next day on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from examples.payments.config import (
    MAX_FRAUD_DELAY_DAYS,
    NIGHT_END_HOUR,
    US_PER_DAY,
    Settings,
    day_end_us,
    utc,
)
from examples.payments.transactions import Payments
from examples.payments.windows import count_covering, day_groups, trailing_max, trailing_sum


def customer_daily_stats_frame(settings: Settings, payments: Payments) -> pd.DataFrame:
    """The `customer_daily_stats` table: 7-day counts, amounts, merchants and night share."""
    day = payments.timestamp_us // US_PER_DAY
    first_day = settings.start_us // US_PER_DAY
    relative_day = day - first_day
    order, first = day_groups(payments.customer, relative_day)
    customer = payments.customer[order][first]
    active_day = relative_day[order][first]
    cents = payments.amount_cents[order]
    count = np.diff(np.append(first, len(order)))
    count_7d = trailing_sum(customer, active_day, count, 7)
    cents_7d = trailing_sum(customer, active_day, np.add.reduceat(cents, first), 7)
    max_cents_7d = trailing_max(customer, active_day, np.maximum.reduceat(cents, first), 7)
    is_night = (payments.hour_of_day[order] < NIGHT_END_HOUR).astype(np.int64)
    night_7d = trailing_sum(customer, active_day, np.add.reduceat(is_night, first), 7)
    distinct_7d = _distinct_merchants_7d(settings, payments, relative_day, customer, active_day)
    return pd.DataFrame(
        {
            "customer_id": customer + 1,
            "event_timestamp": utc(day_end_us(active_day + first_day)),
            "txn_count_7d": count_7d,
            "txn_amount_mean_7d": cents_7d / count_7d / 100.0,
            "txn_amount_max_7d": max_cents_7d / 100.0,
            "distinct_merchants_7d": distinct_7d.astype(np.int64),
            "night_txn_share_7d": night_7d / count_7d,
        }
    )


def _distinct_merchants_7d(
    settings: Settings,
    payments: Payments,
    relative_day: np.ndarray,
    customer: np.ndarray,
    active_day: np.ndarray,
) -> np.ndarray:
    """The exact count of distinct merchants each customer paid in the 7 days to `active_day`.

    Each (customer, merchant, day) covers the 7 days from that day up to the pair's next active
    day, so the pairs active in a window are the intervals covering it.
    """
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
    return count_covering(
        pair_customer,
        pair_day,
        covered_until,
        customer,
        active_day,
        width=settings.days + 16,
    )


def merchant_daily_stats_frame(settings: Settings, payments: Payments) -> pd.DataFrame:
    """The `merchant_daily_stats` table: 7-day counts and amounts, 30-day known fraud rate."""
    first_day = settings.start_us // US_PER_DAY
    event_day = payments.timestamp_us // US_PER_DAY - first_day
    order, first = day_groups(payments.merchant, event_day)
    merchant = payments.merchant[order][first]
    active_day = event_day[order][first]
    count = np.diff(np.append(first, len(order)))
    count_7d = trailing_sum(merchant, active_day, count, 7)
    cents_7d = trailing_sum(
        merchant, active_day, np.add.reduceat(payments.amount_cents[order], first), 7
    )

    # A payment is in day d's 30-day window for d in [event_day, event_day + 30); a fraud label
    # counts from the day it became known, so fraud covers [label_day, event_day + 30). A label
    # known at or before day d's end has label_day <= d, because the stats row is stamped then.
    width = settings.days + 2 * MAX_FRAUD_DELAY_DAYS + 8
    window_count = count_covering(
        payments.merchant, event_day, event_day + 30, merchant, active_day, width=width
    )
    fraud = payments.is_fraud == 1
    label_day = payments.label_timestamp_us[fraud] // US_PER_DAY - first_day
    known = label_day < event_day[fraud] + 30
    known_fraud = count_covering(
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
            "event_timestamp": utc(day_end_us(active_day + first_day)),
            "merchant_txn_count_7d": count_7d,
            "merchant_amount_mean_7d": cents_7d / count_7d / 100.0,
            "merchant_fraud_rate_30d": known_fraud / window_count,
        }
    )
