"""The payments: who pays whom, when, how much, through which channel, and whether it is fraud.

Regular payments follow the customers' activity and the calendar's seasonality; account-takeover
episodes add short bursts of risky payments. Fraud is drawn from a latent logistic model, and
its label arrives late, as a chargeback does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from examples.payments import drift
from examples.payments.config import (
    CARD_PRESENT,
    CATEGORIES,
    CATEGORY_AMOUNT,
    CATEGORY_CHANNEL,
    CHANNELS,
    FRAUD_INTERCEPT,
    HOURLY_PROFILE,
    LEGIT_LABEL_DELAY_DAYS,
    MAX_FRAUD_DELAY_DAYS,
    MOBILE_FIRST_REGIONS,
    MOBILE_MONEY,
    NIGHT_END_HOUR,
    ONLINE,
    PAYDAY_BOOST,
    REGION_FRAUD_LOGIT,
    REGIONS,
    US_PER_DAY,
    US_PER_HOUR,
    WEEKDAY_PROFILE,
    Settings,
    labels,
    utc,
)
from examples.payments.entities import Customers, Merchants, weighted_pick
from examples.payments.windows import recent_payment_count


@dataclass(frozen=True)
class _PaymentColumns:
    """The columns every payment has, whether labelled yet or not."""

    customer: np.ndarray
    merchant: np.ndarray
    timestamp_us: np.ndarray
    amount_cents: np.ndarray
    channel: np.ndarray
    hour_of_day: np.ndarray
    is_international: np.ndarray
    category: np.ndarray
    region: np.ndarray


@dataclass(frozen=True)
class Payments(_PaymentColumns):
    """One entry per payment, sorted by time."""

    is_fraud: np.ndarray
    label_timestamp_us: np.ndarray


@dataclass(frozen=True)
class _RowDraws:
    """The per-payment randomness of the `rows` stream, drawn in a fixed order."""

    local: np.ndarray
    other_region: np.ndarray
    merchant: np.ndarray
    channel: np.ndarray
    mobile_first: np.ndarray
    international: np.ndarray
    amount_noise: np.ndarray
    fraud: np.ndarray
    fraud_delay_days: np.ndarray


@dataclass(frozen=True)
class _Draft(_PaymentColumns):
    """The payments in generation order, before their fraud labels."""

    in_episode: np.ndarray
    drifted: np.ndarray
    surprise: np.ndarray


def draw_payments(
    settings: Settings,
    customers: Customers,
    merchants: Merchants,
    streams: dict[str, np.random.Generator],
) -> Payments:
    """Draw every payment and its fraud label.

    Args:
        settings: the generator settings.
        customers: every customer.
        merchants: every merchant.
        streams: independent random streams named `regular`, `episodes`, `rows` and `drift`.

    Returns:
        The payments, sorted by time (ties keep generation order).
    """
    n = settings.n_transactions
    hour_cdf = _hour_cdf(settings)
    first_hour, weight = _customer_weights(settings, customers, hour_cdf)
    episode_customer, episode_us = _draw_episodes(settings, customers, streams["episodes"])
    n_regular = n - len(episode_customer)
    regular_customer, regular_us = _draw_regular(
        settings, hour_cdf, first_hour, weight, n_regular, streams["regular"]
    )
    draws = _draw_rows(n, streams["rows"])
    draft = _draft(
        settings,
        customers,
        merchants,
        customer=np.concatenate([regular_customer, episode_customer]),
        timestamp_us=np.concatenate([regular_us, episode_us]),
        in_episode=np.arange(n) >= n_regular,
        draws=draws,
        drift_draws=drift.draw_drift(n, streams["drift"]),
    )
    expected_weekly = _expected_weekly_payments(n_regular, weight, first_hour, len(hour_cdf) - 1)
    logit = _fraud_logit(settings, customers, merchants, draft, expected_weekly)
    is_fraud = (draws.fraud < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    label_delay_us = np.where(
        is_fraud == 1,
        np.rint(draws.fraud_delay_days * US_PER_DAY).astype(np.int64),
        LEGIT_LABEL_DELAY_DAYS * US_PER_DAY,
    )
    # Stable sort: ties keep generation order, and rows before drift_start sort identically.
    order = np.argsort(draft.timestamp_us, kind="stable")
    return Payments(
        **{item.name: getattr(draft, item.name)[order] for item in fields(_PaymentColumns)},
        is_fraud=is_fraud[order],
        label_timestamp_us=(draft.timestamp_us + label_delay_us)[order],
    )


def _draft(
    settings: Settings,
    customers: Customers,
    merchants: Merchants,
    *,
    customer: np.ndarray,
    timestamp_us: np.ndarray,
    in_episode: np.ndarray,
    draws: _RowDraws,
    drift_draws: drift.DriftDraws,
) -> _Draft:
    """Everything about each payment but its label, drift applied, from payer and time."""
    drifted = drift.drifted_rows(settings, timestamp_us)
    customer = drift.move_to_growing_region(
        settings, customers, customer, timestamp_us, drifted & ~in_episode, drift_draws
    )
    region = customers.region[customer]
    merchant = _pick_merchants(merchants, region, draws)
    category = merchants.category[merchant]
    channel = _pick_channels(category, region, in_episode, draws)
    channel = drift.shift_to_mobile_money(settings, channel, drifted, drift_draws)
    international_rate = (
        0.003
        + 0.02 * (channel == ONLINE)
        + 0.12 * (category == CATEGORIES.index("travel"))
        + 0.03 * in_episode
    )
    timestamp_us = drift.shift_to_night(
        settings, customers.signup_us[customer], timestamp_us, drifted, drift_draws
    )
    # Fraudsters push amounts well above what the customer usually spends.
    surprise = draws.amount_noise + 1.2 * in_episode
    log_amount = customers.log_spend[customer] + np.log(CATEGORY_AMOUNT[category]) + 0.6 * surprise
    log_amount = drift.inflate_amounts(settings, log_amount, drifted)
    return _Draft(
        customer=customer,
        merchant=merchant,
        timestamp_us=timestamp_us,
        amount_cents=np.maximum(np.rint(np.exp(log_amount) * 100.0), 50).astype(np.int64),
        channel=channel,
        hour_of_day=(timestamp_us // US_PER_HOUR) % 24,
        is_international=(draws.international < international_rate).astype(np.int64),
        category=category,
        region=region,
        in_episode=in_episode,
        drifted=drifted,
        surprise=surprise,
    )


def _fraud_logit(
    settings: Settings,
    customers: Customers,
    merchants: Merchants,
    draft: _Draft,
    expected_weekly: np.ndarray,
) -> np.ndarray:
    """The latent log-odds of fraud of each payment (the terms' order fixes the rounding)."""
    customer, timestamp_us, surprise = draft.customer, draft.timestamp_us, draft.surprise
    account_age_days = (timestamp_us - customers.signup_us[customer]) / US_PER_DAY
    updated = customers.has_update[customer] & (timestamp_us >= customers.update_us[customer])
    kyc_level = np.where(
        updated, customers.updated_kyc_level[customer], customers.kyc_level[customer]
    )
    burst = np.log1p(recent_payment_count(settings, customer, timestamp_us)) - np.log1p(
        expected_weekly[customer]
    )
    ring = drift.fraud_ring_logit(settings, draft.drifted, draft.category, draft.channel)
    return (
        FRAUD_INTERCEPT
        + 0.6 * surprise
        + 1.5 * np.maximum(surprise - 1.2, 0.0)
        + 1.8 * (draft.hour_of_day < NIGHT_END_HOUR)
        + 0.6 * (draft.hour_of_day >= 22)
        + np.array([0.0, 1.6, 0.9])[draft.channel]
        + 2.2 * draft.is_international
        + 1.0 * merchants.latent_risk[draft.merchant]
        + np.array([0.0, 1.2, 0.5, 0.0])[kyc_level]
        + 2.0 * np.exp(-account_age_days / 30.0)
        + 1.0 * np.maximum(burst, 0.0)
        + REGION_FRAUD_LOGIT[draft.region]
        + customers.susceptibility[customer]
        + 3.5 * draft.in_episode
        + ring
    )


def _hour_cdf(settings: Settings) -> np.ndarray:
    """Cumulative share of payment volume at the start of each hour of the period (0 ... 1)."""
    n_hours = settings.days * 24
    hour_start = settings.start_us + np.arange(n_hours, dtype=np.int64) * US_PER_HOUR
    day = hour_start // US_PER_DAY
    calendar_day = hour_start.astype("datetime64[us]").astype("datetime64[D]")
    day_of_month = (calendar_day - calendar_day.astype("datetime64[M]")).astype(np.int64) + 1
    intensity = (
        HOURLY_PROFILE[(hour_start // US_PER_HOUR) % 24]
        # 1970-01-01 was a Thursday, weekday 3 when Monday is 0.
        * WEEKDAY_PROFILE[(day + 3) % 7]
        * np.where((day_of_month >= 25) | (day_of_month <= 2), PAYDAY_BOOST, 1.0)
        * np.linspace(1.0, 1.2, n_hours)
    )
    cdf = np.concatenate([[0.0], np.cumsum(intensity)])
    return cdf / cdf[-1]


def _customer_weights(
    settings: Settings, customers: Customers, hour_cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's first hour of the period, and their share of the regular payments."""
    n_hours = len(hour_cdf) - 1
    first_hour = np.where(
        customers.signup_us >= settings.start_us,
        (customers.signup_us - settings.start_us) // US_PER_HOUR + 1,
        0,
    ).clip(0, n_hours - 1)
    # A customer who joins mid-period has proportionally less of the period to transact in.
    weight = customers.activity * (1.0 - hour_cdf[first_hour])
    return first_hour, weight


def _draw_episodes(
    settings: Settings, customers: Customers, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Account-takeover episodes: short bursts of risky payments on a compromised account.

    Returns:
        The customer and the time of each episode payment, episode by episode.
    """
    n = settings.n_transactions
    episode_rows_target = max(1, round(0.006 * n))
    episode_sizes = 2 + rng.poisson(2.0, size=episode_rows_target)
    n_episodes = max(
        1, int(np.searchsorted(np.cumsum(episode_sizes), episode_rows_target, "right"))
    )
    episode_weight = customers.activity * np.where(customers.kyc_level == 1, 2.0, 1.0)
    episode_customer = weighted_pick(episode_weight, rng.random(episode_rows_target))[:n_episodes]
    earliest = np.maximum(customers.signup_us, settings.start_us) + US_PER_HOUR
    latest = settings.end_us - 2 * US_PER_DAY
    episode_start = earliest[episode_customer] + (
        rng.random(episode_rows_target)[:n_episodes]
        * (latest - earliest[episode_customer]).clip(min=0)
    ).astype(np.int64)
    episode_of_row = np.repeat(np.arange(n_episodes), episode_sizes[:n_episodes])
    episode_offset = rng.integers(0, 36 * US_PER_HOUR, size=int(episode_sizes.sum()))
    return (
        episode_customer[episode_of_row],
        episode_start[episode_of_row] + episode_offset[: len(episode_of_row)],
    )


def _draw_regular(
    settings: Settings,
    hour_cdf: np.ndarray,
    first_hour: np.ndarray,
    weight: np.ndarray,
    n_regular: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The customer and time of each regular payment, following activity and seasonality."""
    n_hours = len(hour_cdf) - 1
    regular_customer = weighted_pick(weight, rng.random(n_regular))
    low = hour_cdf[first_hour[regular_customer]]
    hour_slot = np.searchsorted(hour_cdf, low + rng.random(n_regular) * (1.0 - low), "right") - 1
    hour_slot = hour_slot.clip(first_hour[regular_customer], n_hours - 1)
    regular_us = (
        settings.start_us + hour_slot * US_PER_HOUR + rng.integers(0, US_PER_HOUR, size=n_regular)
    )
    return regular_customer, regular_us


def _expected_weekly_payments(
    n_regular: int, weight: np.ndarray, first_hour: np.ndarray, n_hours: int
) -> np.ndarray:
    active_weeks = (n_hours - first_hour) / (24 * 7)
    return n_regular * weight / weight.sum() / active_weeks


def _draw_rows(n: int, rng: np.random.Generator) -> _RowDraws:
    """Draw the per-payment randomness, always in this order (it fixes the numbers)."""
    local = rng.random(n)
    other_region = rng.random(n)
    merchant = rng.random(n)
    channel = rng.random(n)
    mobile_first = rng.random(n)
    international = rng.random(n)
    amount_noise = rng.normal(0.0, 1.0, size=n)
    fraud = rng.random(n)
    fraud_delay_days = np.clip(1.0 + rng.gamma(1.2, 4.0, size=n), 1.0, MAX_FRAUD_DELAY_DAYS)
    return _RowDraws(
        local=local,
        other_region=other_region,
        merchant=merchant,
        channel=channel,
        mobile_first=mobile_first,
        international=international,
        amount_noise=amount_noise,
        fraud=fraud,
        fraud_delay_days=fraud_delay_days,
    )


def _pick_merchants(merchants: Merchants, region: np.ndarray, draws: _RowDraws) -> np.ndarray:
    """Mostly a merchant of the payer's region, else of a region drawn by merchant popularity."""
    merchant_region = np.where(
        draws.local < 0.85,
        region,
        weighted_pick(np.bincount(merchants.region, merchants.popularity), draws.other_region),
    )
    merchant = np.empty(len(region), dtype=np.int64)
    for code in range(len(REGIONS)):
        here = merchant_region == code
        candidates = np.flatnonzero(merchants.region == code)
        merchant[here] = candidates[
            weighted_pick(merchants.popularity[candidates], draws.merchant[here])
        ]
    return merchant


def _pick_channels(
    category: np.ndarray, region: np.ndarray, in_episode: np.ndarray, draws: _RowDraws
) -> np.ndarray:
    """The channel by category, mobile money first in some regions, remote for takeovers."""
    channel_cdf = np.cumsum(CATEGORY_CHANNEL, axis=1)[category]
    channel = (draws.channel > channel_cdf[:, 0]).astype(np.int64) + (
        draws.channel > channel_cdf[:, 1]
    )
    channel = np.where(
        MOBILE_FIRST_REGIONS[region] & (channel == CARD_PRESENT) & (draws.mobile_first < 0.35),
        MOBILE_MONEY,
        channel,
    )
    # Account takeovers happen remotely, rarely at a till.
    episode_channel = np.where(
        draws.channel < 0.6, ONLINE, np.where(draws.channel < 0.95, MOBILE_MONEY, CARD_PRESENT)
    )
    return np.where(in_episode, episode_channel, channel)


def transactions_frame(payments: Payments) -> pd.DataFrame:
    """The `transactions` table: one row per payment, ids counting up in time order."""
    return pd.DataFrame(
        {
            "transaction_id": np.arange(1, len(payments.customer) + 1, dtype=np.int64),
            "customer_id": payments.customer + 1,
            "merchant_id": payments.merchant + 1,
            "event_timestamp": utc(payments.timestamp_us),
            "amount": payments.amount_cents / 100.0,
            "channel": labels(CHANNELS, payments.channel),
            "hour_of_day": payments.hour_of_day.astype(np.int64),
            "is_international": payments.is_international,
            "merchant_category": labels(CATEGORIES, payments.category),
            "region": labels(REGIONS, payments.region),
            "is_fraud": payments.is_fraud,
            "label_timestamp": utc(payments.label_timestamp_us),
        }
    )
