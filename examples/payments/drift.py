"""Drift of payments at or after `drift_start`, scaled by `drift_strength`.

Every random number drift uses is drawn whether or not drift is on (`draw_drift`), from its own
stream, so turning drift on changes no other draw, and each transformation touches only rows at
or after `drift_start`: the data before it is identical to a run without drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from examples.payments.config import (
    CATEGORIES,
    FRAUD_RING_CATEGORY,
    GROWING_REGION,
    MOBILE_MONEY,
    NIGHT_END_HOUR,
    REGIONS,
    US_PER_DAY,
    US_PER_HOUR,
    Settings,
)
from examples.payments.entities import Customers, weighted_pick

# Amounts inflate by this factor per unit of drift strength, as in a currency devaluation.
AMOUNT_INFLATION = 1.6


@dataclass(frozen=True)
class DriftDraws:
    """Uniforms in [0, 1), one per payment, for each drift decision."""

    region: np.ndarray
    region_pick: np.ndarray
    channel: np.ndarray
    night: np.ndarray
    night_hour: np.ndarray


def draw_drift(n: int, rng: np.random.Generator) -> DriftDraws:
    """Draw the drift's randomness for `n` payments, in a fixed order."""
    region = rng.random(n)
    region_pick = rng.random(n)
    channel = rng.random(n)
    night = rng.random(n)
    night_hour = rng.random(n)
    return DriftDraws(region, region_pick, channel, night, night_hour)


def drifted_rows(settings: Settings, timestamp_us: np.ndarray) -> np.ndarray:
    """Which payments drift: those at or after `drift_start` (none without drift)."""
    if settings.drift_start_us is None:
        return np.zeros(len(timestamp_us), dtype=bool)
    return timestamp_us >= settings.drift_start_us


def move_to_growing_region(
    settings: Settings,
    customers: Customers,
    customer: np.ndarray,
    timestamp_us: np.ndarray,
    movable: np.ndarray,
    draws: DriftDraws,
) -> np.ndarray:
    """Hand some drifted payments to customers of `GROWING_REGION` who had joined by then.

    Args:
        settings: the generator settings.
        customers: every customer.
        customer: the paying customer of each payment.
        timestamp_us: the time of each payment.
        movable: the payments that may move (drifted, not part of an account takeover).
        draws: the drift's randomness.

    Returns:
        The paying customer of each payment after the move.
    """
    if settings.drift_start_us is None:
        return customer
    growing = np.flatnonzero(customers.region == REGIONS.index(GROWING_REGION))
    moved = movable & (draws.region < min(0.2 * settings.drift_strength, 0.95))
    if not (growing.size and moved.any()):
        return customer
    newcomer = growing[weighted_pick(customers.activity[growing], draws.region_pick[moved])]
    joined = customers.signup_us[newcomer] < timestamp_us[moved]
    customer = customer.copy()
    customer[moved] = np.where(joined, newcomer, customer[moved])
    return customer


def shift_to_mobile_money(
    settings: Settings, channel: np.ndarray, drifted: np.ndarray, draws: DriftDraws
) -> np.ndarray:
    """Move a share of drifted payments to mobile money."""
    share = min(0.25 * settings.drift_strength, 0.95)
    return np.where(drifted & (draws.channel < share), MOBILE_MONEY, channel)


def shift_to_night(
    settings: Settings,
    signup_us: np.ndarray,
    timestamp_us: np.ndarray,
    drifted: np.ndarray,
    draws: DriftDraws,
) -> np.ndarray:
    """Move a share of drifted payments to a night hour of the same day.

    A payment moves only if its new time stays inside the drift window and the period, and after
    its customer's signup (`signup_us`, one per payment).
    """
    if settings.drift_start_us is None:
        return timestamp_us
    at_night = drifted & (draws.night < min(0.12 * settings.drift_strength, 0.95))
    night_hour = (draws.night_hour * NIGHT_END_HOUR).astype(np.int64)
    shifted = (
        timestamp_us
        - timestamp_us % US_PER_DAY
        + night_hour * US_PER_HOUR
        + timestamp_us % US_PER_HOUR
    )
    at_night &= (
        (shifted >= settings.drift_start_us) & (shifted < settings.end_us) & (shifted > signup_us)
    )
    return np.where(at_night, shifted, timestamp_us)


def inflate_amounts(settings: Settings, log_amount: np.ndarray, drifted: np.ndarray) -> np.ndarray:
    """Inflate the (log) amounts of drifted payments.

    The fraud pattern keys on the amount relative to the customer's own (equally inflated)
    spending, so it does not move.
    """
    return log_amount + drifted * (math.log(AMOUNT_INFLATION) * settings.drift_strength)


def fraud_ring_logit(
    settings: Settings, drifted: np.ndarray, category: np.ndarray, channel: np.ndarray
) -> np.ndarray:
    """The fraud-logit boost of the new fraud ring: mobile-money payments in its category."""
    ring = drifted & (category == CATEGORIES.index(FRAUD_RING_CATEGORY)) & (channel == MOBILE_MONEY)
    return 2.0 * settings.drift_strength * ring
