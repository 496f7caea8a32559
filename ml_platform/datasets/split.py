"""Splitting rows by time, and the content hash that identifies a data snapshot."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def snapshot_id(frame: pd.DataFrame, sort_by: Sequence[str] = ()) -> str:
    """A content hash of a DataFrame: same columns, dtypes and values give the same id.

    Args:
        frame: the rows; their order matters, the index does not.
        sort_by: hash the rows as ``frame.sort_values(sort_by)`` orders them, without making
            that sorted copy of the whole frame (the id is the sorted copy's id).

    Returns:
        16 hexadecimal characters.
    """
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()  # pyright: ignore[reportAttributeAccessIssue]
    if sort_by:
        hashes = hashes[_sort_order(frame, list(sort_by))]
    digest.update(hashes.tobytes())
    return digest.hexdigest()[:16]


def _sort_order(frame: pd.DataFrame, columns: list[str], kind: str = "quicksort") -> np.ndarray:
    """The positions ``frame.sort_values(columns, kind=kind)`` puts the rows in.

    Only the sort columns are copied: pandas computes the order from them alone, so this is the
    same permutation, ties included.
    """
    keys = frame[columns].reset_index(drop=True)
    return keys.sort_values(columns, kind=kind).index.to_numpy()  # pyright: ignore[reportCallIssue, reportArgumentType]


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

    # The rows by position, not a sorted copy masked into more copies: a 10M-row training set
    # is then held about twice (the frame and its splits), not four times.
    order = _sort_order(frame, [timestamp_column], kind="stable")
    times = frame[timestamp_column].iloc[order].reset_index(drop=True)
    train_end = times.quantile(1 - validation_fraction - test_fraction)
    validation_end = times.quantile(1 - test_fraction)
    masks = {
        "train": times < train_end,
        "validation": (times >= train_end) & (times < validation_end),
        "test": times >= validation_end,
    }
    splits = {}
    for name, mask in masks.items():
        if not mask.any():
            raise ValueError(
                f"the {name} split is empty ({len(frame)} labelled rows between "
                f"{times.min()} and {times.max()}); add data or change split fractions"
            )
        part = frame.take(order[mask.to_numpy()])
        part.index = pd.RangeIndex(len(part))
        splits[name] = part
    return splits
