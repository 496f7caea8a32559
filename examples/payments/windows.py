"""Vectorized time-window counting: interval sweeps and trailing daily sums and maxima.

These are what keep the daily statistics exact and strictly backward-looking without a Python
loop over customers or merchants.
"""

from __future__ import annotations

import numpy as np

from examples.payments.config import US_PER_SECOND, Settings


def count_covering(
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
    queries = query_group * width + query_at
    if np.all(queries[1:] >= queries[:-1]):
        position = np.searchsorted(keys, queries, "right") - 1
    else:
        # Sorted probes walk the keys in order: at 10M payments, 4x faster than random ones.
        order = np.argsort(queries, kind="stable")
        position = np.empty(len(queries), dtype=np.intp)
        position[order] = np.searchsorted(keys, queries[order], "right") - 1
    return np.where(position >= 0, running[position.clip(min=0)], 0)


def recent_payment_count(
    settings: Settings, customer: np.ndarray, timestamp_us: np.ndarray
) -> np.ndarray:
    """Count each customer's payments in the 7 days before each payment, at second resolution.

    Each payment covers the week starting the second after it, so a payment counts neither
    itself nor anything in its own second; that keeps the count strictly backward-looking, which
    the drift guarantee relies on.
    """
    seconds = (timestamp_us - settings.start_us) // US_PER_SECOND
    return count_covering(
        customer,
        seconds + 1,
        seconds + 1 + 7 * 86_400,
        customer,
        seconds,
        width=(settings.days + 8) * 86_400,
    )


def day_groups(group: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by (group, day) and return that order and the start of each (group, day)."""
    order = np.lexsort((day, group))
    group, day = group[order], day[order]
    first = np.concatenate([[True], (group[1:] != group[:-1]) | (day[1:] != day[:-1])])
    return order, np.flatnonzero(first)


def trailing_sum(group: np.ndarray, day: np.ndarray, values: np.ndarray, days: int) -> np.ndarray:
    """Sum daily values over the `days` days ending each row's day, rows sorted by (group, day).

    Each (group, day) appears once, so the window holds at most `days` consecutive rows.
    """
    total = values.copy()
    for lag in range(1, days):
        same = (group[lag:] == group[:-lag]) & (day[:-lag] > day[lag:] - days)
        total[lag:] += np.where(same, values[:-lag], 0)
    return total


def trailing_max(group: np.ndarray, day: np.ndarray, values: np.ndarray, days: int) -> np.ndarray:
    """Like `trailing_sum`, for the maximum."""
    best = values.copy()
    for lag in range(1, days):
        same = (group[lag:] == group[:-lag]) & (day[:-lag] > day[lag:] - days)
        best[lag:] = np.where(same, np.maximum(best[lag:], values[:-lag]), best[lag:])
    return best
