"""Customers and merchants: their hidden traits, and their profile tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from examples.payments.config import (
    CATEGORIES,
    CATEGORY_RISK,
    CATEGORY_TXN_SHARE,
    REGION_SHARE,
    REGION_SPEND,
    REGIONS,
    US_PER_DAY,
    Settings,
    labels,
    utc,
)


@dataclass(frozen=True)
class Customers:
    """One entry per customer (index = customer id - 1); `activity` to `susceptibility` are hidden.

    A customer may have one profile update (higher KYC level, higher credit limit) at `update_us`.
    """

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


def draw_customers(settings: Settings, rng: np.random.Generator) -> Customers:
    """Draw the customers: region, age, KYC level, credit limit, signup, and hidden traits."""
    n = settings.n_customers
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARE)
    age_years = np.clip(np.rint(18 + rng.gamma(2.0, 8.0, size=n)), 18, 85).astype(np.int64)
    kyc_level = rng.choice(np.array([1, 2, 3], dtype=np.int64), size=n, p=[0.30, 0.45, 0.25])
    base_limit = np.array([0.0, 200.0, 1_000.0, 5_000.0])[kyc_level]
    credit_limit = _round_to_tens(base_limit * rng.lognormal(0.0, 0.5, size=n))
    # Most customers signed up in the two years before the period; some join during its first
    # 60%, which leaves every customer time to transact and gives the model new accounts.
    joins_during_period = rng.random(n) < 0.12
    before = settings.start_us - (rng.random(n) * 730 * US_PER_DAY).astype(np.int64)
    during = settings.start_us + (rng.random(n) * 0.6 * settings.days * US_PER_DAY).astype(np.int64)
    signup_us = np.where(joins_during_period, during, before)
    activity = rng.lognormal(0.0, 0.9, size=n)
    log_spend = np.log(20.0 * REGION_SPEND[region]) + rng.normal(0.0, 0.5, size=n)
    susceptibility = rng.normal(0.0, 0.3, size=n)
    update_us = signup_us + ((30 + rng.random(n) * 370) * US_PER_DAY).astype(np.int64)
    has_update = (rng.random(n) < 0.3) & (update_us < settings.end_us)
    updated_kyc_level = np.where(rng.random(n) < 0.4, np.minimum(kyc_level + 1, 3), kyc_level)
    updated_credit_limit = _round_to_tens(credit_limit * rng.uniform(1.3, 2.0, size=n))
    return Customers(
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
class Merchants:
    """One entry per merchant (index = merchant id - 1); `popularity`, `latent_risk` are hidden."""

    category: np.ndarray
    region: np.ndarray
    popularity: np.ndarray
    latent_risk: np.ndarray
    risk_tier: np.ndarray
    onboarded_us: np.ndarray


def draw_merchants(settings: Settings, rng: np.random.Generator) -> Merchants:
    """Draw the merchants: category, region, popularity, risk (hidden and as a tier), onboarding."""
    n = settings.n_merchants
    # Exact allocation so every category and region has merchants, however few there are.
    category_counts = _allocate(n, CATEGORY_TXN_SHARE)
    category = rng.permutation(np.repeat(np.arange(len(CATEGORIES)), category_counts))
    region = rng.permutation(np.repeat(np.arange(len(REGIONS)), _allocate(n, REGION_SHARE)))
    # A few small collusive merchants carry far more fraud than their category suggests.
    collusive = rng.random(n) < 0.03
    popularity = (
        rng.lognormal(0.0, 1.0, size=n)
        * np.where(collusive, 0.3, 1.0)
        * CATEGORY_TXN_SHARE[category]
        / category_counts[category]
    )
    latent_risk = CATEGORY_RISK[category] + rng.normal(0.0, 0.6, size=n) + 2.0 * collusive
    observed_risk = latent_risk + rng.normal(0.0, 0.7, size=n)
    tier_cuts = np.quantile(observed_risk, [0.55, 0.85])
    risk_tier = (1 + (observed_risk > tier_cuts[0]) + (observed_risk > tier_cuts[1])).astype(
        np.int64
    )
    # Within two years of the start, like customer signups, so a profile stays inside a 1000-day
    # feature TTL throughout a default-length period.
    onboarded_us = settings.start_us - ((30 + rng.random(n) * 700) * US_PER_DAY).astype(np.int64)
    return Merchants(
        category=category,
        region=region,
        popularity=popularity,
        latent_risk=latent_risk,
        risk_tier=risk_tier,
        onboarded_us=onboarded_us,
    )


def customer_profile_frame(customers: Customers) -> pd.DataFrame:
    """The `customer_profile` table: one row at signup, and one per profile update."""
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
        // US_PER_DAY
    )
    order = np.lexsort((timestamp_us, customer))
    return pd.DataFrame(
        {
            "customer_id": (customer + 1)[order],
            "event_timestamp": utc(timestamp_us[order]),
            "region": labels(REGIONS, customers.region[customer][order]),
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


def merchant_profile_frame(merchants: Merchants) -> pd.DataFrame:
    """The `merchant_profile` table: one row per merchant, stamped when it was onboarded."""
    return pd.DataFrame(
        {
            "merchant_id": np.arange(1, len(merchants.category) + 1, dtype=np.int64),
            "event_timestamp": utc(merchants.onboarded_us),
            "merchant_category": labels(CATEGORIES, merchants.category),
            "merchant_region": labels(REGIONS, merchants.region),
            "merchant_risk_tier": merchants.risk_tier,
        }
    )


def weighted_pick(weight: np.ndarray, uniform: np.ndarray) -> np.ndarray:
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
