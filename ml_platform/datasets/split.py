"""Splitting rows by time, and the content hash that identifies a data snapshot."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def snapshot_id(frame: pd.DataFrame) -> str:
    """A content hash of a DataFrame: same columns, dtypes and values give the same id.

    Args:
        frame: the rows; their order matters, the index does not.

    Returns:
        16 hexadecimal characters.
    """
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    hashes = pd.util.hash_pandas_object(frame, index=False)  # pyright: ignore[reportAttributeAccessIssue]
    digest.update(hashes.to_numpy().tobytes())
    return digest.hexdigest()[:16]


def time_split(
    frame: pd.DataFrame, timestamp_column: str, validation_fraction: float, test_fraction: float
) -> dict[str, pd.DataFrame]:
    """Split by time: the oldest rows train, the next validate, the newest test.

    Cut points are timestamps, so rows sharing a timestamp never straddle two splits.

    Args:
        frame: the rows to split.
        timestamp_column: the column to split on.
        validation_fraction: the share of rows (by time quantile) for validation.
        test_fraction: the share of rows (by time quantile) for the test split.

    Returns:
        ``train``, ``validation`` and ``test`` frames, each sorted by time.

    Raises:
        ValueError: a split would be empty; the message says how many rows there are.
    """
    import pandas as pd

    ordered = frame.sort_values(timestamp_column, kind="stable").reset_index(drop=True)
    times = ordered[timestamp_column]
    train_end = times.quantile(1 - validation_fraction - test_fraction)
    validation_end = times.quantile(1 - test_fraction)
    splits = {
        "train": ordered[times < train_end],
        "validation": ordered[(times >= train_end) & (times < validation_end)],
        "test": ordered[times >= validation_end],
    }
    for name, part in splits.items():
        if part.empty:
            raise ValueError(
                f"the {name} split is empty ({len(frame)} labelled rows between "
                f"{times.min()} and {times.max()}); add data or change split fractions"
            )
    return {name: pd.DataFrame(part).reset_index(drop=True) for name, part in splits.items()}
