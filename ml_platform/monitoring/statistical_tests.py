"""The per-column drift tests of Evidently 0.7, computed from reference statistics.

Each function reproduces the formula of ``evidently.legacy.calculations.stattests`` (the code
``Report([DataDriftPreset()])`` runs): same statistic, same SciPy call where there is one, same
threshold direction. The reference side comes from ``reference.py``: exact category or value
counts for the count-based tests, exact values or the quantile sketch for the numeric ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ml_platform.monitoring.reference import NumericReference

if TYPE_CHECKING:
    import numpy as np

# Evidently: reference_data.shape[0] <= 1000 picks K-S / chi-squared / z, above it Wasserstein /
# Jensen-Shannon; a numeric column with at most 5 distinct values (reference and window
# together) is tested like a categorical one.
SMALL_REFERENCE_ROWS = 1000
FEW_DISTINCT_VALUES = 5
# get_binned_data: a numeric reference with at most 20 distinct values is binned by value.
BIN_BY_VALUE_LIMIT = 20
# wasserstein_distance_norm: the distance is divided by max(std, 0.001).
MIN_NORM = 0.001


@dataclass(frozen=True)
class StatisticalTest:
    """One drift test as Evidently defines it: where it applies and when it flags drift.

    Attributes:
        name: Evidently's name (``DataDriftPreset(per_column_method={...: name})``).
        kinds: the column kinds it may be configured for.
        default_threshold: Evidently's default threshold.
        drift_when: ``>=`` for distances, ``<=`` or ``<`` for p-values (Evidently's comparison).
    """

    name: str
    kinds: frozenset[str]
    default_threshold: float
    drift_when: Literal[">=", "<=", "<"]

    @property
    def measures(self) -> str:
        """``distance`` (large means drift) or ``p_value`` (small means drift)."""
        return "distance" if self.drift_when == ">=" else "p_value"

    def drifted(self, score: float, threshold: float) -> bool:
        """Evidently's verdict for ``score`` at ``threshold`` (NaN never drifts)."""
        if self.drift_when == ">=":
            return bool(score >= threshold)
        if self.drift_when == "<=":
            return bool(score <= threshold)
        return bool(score < threshold)


NUMERIC = frozenset({"numeric"})
CATEGORICAL = frozenset({"categorical"})
BOTH = NUMERIC | CATEGORICAL
TESTS: dict[str, StatisticalTest] = {
    test.name: test
    for test in (
        StatisticalTest("wasserstein", NUMERIC, 0.1, ">="),
        StatisticalTest("ks", NUMERIC, 0.05, "<="),
        StatisticalTest("jensenshannon", BOTH, 0.1, ">="),
        StatisticalTest("psi", BOTH, 0.1, ">="),
        StatisticalTest("chisquare", CATEGORICAL, 0.05, "<"),
        StatisticalTest("z", CATEGORICAL, 0.05, "<"),
    )
}


def wasserstein(reference: NumericReference, window: np.ndarray) -> float:
    """Wasserstein-1 distance of sorted window values to the reference, over max(std, 0.001).

    The reference is a step quantile function (exact values, or sketch bin means, each
    holding its weight); the window's is exact. On each reference step the integral of
    ``|x - F_window^-1(p)|`` splits where the window's quantile crosses ``x`` and is read off
    the window's cumulative sums, so one pass over the window suffices. Values are centred on
    the reference mean first so the cumulative sums keep their precision.
    """
    import numpy as np

    atoms = np.asarray(reference.values) - reference.mean
    current = window - reference.mean
    count = len(current)
    edges = np.concatenate(([0], np.cumsum(reference.weights))) / reference.count
    sums = np.concatenate(([0.0], np.cumsum(current)))

    def integral(upto: np.ndarray) -> np.ndarray:
        scaled = upto * count
        index = np.minimum(np.floor(scaled).astype(np.int64), count - 1)
        return (sums[index] + (scaled - index) * current[index]) / count

    start, stop = edges[:-1], edges[1:]
    crossing = np.clip(np.searchsorted(current, atoms, side="left") / count, start, stop)
    at_start, at_crossing, at_stop = integral(start), integral(crossing), integral(stop)
    below = atoms * (crossing - start) - (at_crossing - at_start)
    above = (at_stop - at_crossing) - atoms * (stop - crossing)
    distance = max(float(np.sum(below + above)), 0.0)
    return distance / max(reference.std, MIN_NORM)


def kolmogorov_smirnov(reference: NumericReference, window: np.ndarray) -> float:
    """Two-sided K-S p-value (``scipy.stats.ks_2samp``, as Evidently) of reference and window.

    Exact for an exact reference (every reference of at most 1,000 rows, the only size
    Evidently's defaults run K-S on). A sketched reference (K-S configured on a large one) is
    compared as its weighted bin means with Smirnov's asymptotic p-value.
    """
    import numpy as np
    from scipy import stats

    if reference.exact:
        sample = np.repeat(np.asarray(reference.values), reference.weights)
        result = stats.ks_2samp(sample, window)
        return float(result.pvalue)  # pyright: ignore[reportAttributeAccessIssue]
    atoms = np.asarray(reference.values)
    cumulative = np.cumsum(reference.weights) / reference.count
    points = np.concatenate((atoms, window))

    def reference_cdf(at: np.ndarray) -> np.ndarray:
        index = np.searchsorted(atoms, at, side="right")
        return np.where(index > 0, cumulative[np.maximum(index - 1, 0)], 0.0)

    window_cdf = np.searchsorted(window, points, side="right") / len(window)
    statistic = float(np.max(np.abs(reference_cdf(points) - window_cdf)))
    larger, smaller = sorted([float(reference.count), float(len(window))], reverse=True)
    return float(stats.kstwo.sf(statistic, np.round(larger * smaller / (larger + smaller))))


def aligned_counts(
    reference: dict[Any, int], window: dict[Any, int]
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The union of categories and both count vectors over it (0 where absent)."""
    import numpy as np

    keys = list(reference) + [key for key in window if key not in reference]
    return (
        keys,
        np.array([reference.get(key, 0) for key in keys], dtype=np.float64),
        np.array([window.get(key, 0) for key in keys], dtype=np.float64),
    )


def chi_squared(reference: dict[Any, int], window: dict[Any, int]) -> float:
    """Chi-squared p-value of window counts against reference counts scaled to the window."""
    import numpy as np
    from scipy import stats

    _, expected, observed = aligned_counts(reference, window)
    expected = expected * (observed.sum() / expected.sum())
    # A category absent from the reference has expected count 0: statistic inf, p-value 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        result = stats.chisquare(observed, expected)
    return float(result.pvalue)  # pyright: ignore[reportAttributeAccessIssue]


def z_test(reference: dict[Any, int], window: dict[Any, int]) -> float:
    """Two-proportion z-test p-value of "not the first category" (categories sorted)."""
    import numpy as np
    from scipy.stats import norm

    if len(reference) == 1 and len(window) == 1 and next(iter(reference)) in window:
        return 1.0
    keys = list(dict.fromkeys([*reference, *window]))
    try:
        first = sorted(keys)[0]
    except TypeError:  # mixed types: Evidently cannot sort them either
        first = sorted(keys, key=lambda key: (type(key).__name__, str(key)))[0]
    reference_rows, window_rows = sum(reference.values()), sum(window.values())
    reference_share = (reference_rows - reference.get(first, 0)) / reference_rows
    window_share = (window_rows - window.get(first, 0)) / window_rows
    pooled = (reference_share * reference_rows + window_share * window_rows) / (
        reference_rows + window_rows
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = (reference_share - window_share) / np.sqrt(
            pooled * (1 - pooled) * (1.0 / reference_rows + 1.0 / window_rows)
        )
    return float(2 * (1 - norm.cdf(np.abs(statistic))))


def jensen_shannon(reference_shares: np.ndarray, window_shares: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log, ``scipy.spatial.distance.jensenshannon``)."""
    from scipy.spatial import distance

    return float(distance.jensenshannon(reference_shares, window_shares))


def population_stability_index(reference_shares: np.ndarray, window_shares: np.ndarray) -> float:
    """PSI with Evidently's filling of empty bins (min share / 1e6, or 1e-4)."""
    import numpy as np

    reference_shares = fill_zeroes(reference_shares)
    window_shares = fill_zeroes(window_shares)
    return float(
        np.sum((reference_shares - window_shares) * np.log(reference_shares / window_shares))
    )


def fill_zeroes(shares: np.ndarray) -> np.ndarray:
    """Evidently's ``feel_zeroes``: empty bins get a small share so logarithms stay finite."""
    shares = shares.copy()
    smallest = shares[shares != 0].min()
    shares[shares == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return shares


def count_shares(
    reference: dict[Any, int], window: dict[Any, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each category (union of both) in the reference and in the window."""
    _, reference_counts, window_counts = aligned_counts(reference, window)
    return reference_counts / reference_counts.sum(), window_counts / window_counts.sum()


def histogram_shares(
    reference: NumericReference, window: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shares per Sturges bin of reference and window together (Evidently's numeric binning).

    Bin edges depend only on the joint minimum, maximum and size, which the reference stores;
    a sketched reference counts each bin mean's weight in the bin holding it.
    """
    import numpy as np

    low = min(reference.minimum, float(window[0]))
    high = max(reference.maximum, float(window[-1]))
    size = reference.count + len(window)
    width = (high - low) / (np.log2(size) + 1.0)
    bins = int(np.ceil((high - low) / width)) if width else 1
    edges = np.histogram_bin_edges(np.array([low, high]), bins=bins)
    reference_counts = np.histogram(reference.values, edges, weights=reference.weights)[0]
    window_counts = np.histogram(window, edges)[0]
    return reference_counts / reference.count, window_counts / len(window)
