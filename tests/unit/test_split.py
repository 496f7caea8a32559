"""Time split and snapshot id: the copy-saving versions give what the straightforward ones gave."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_platform.datasets.split import snapshot_id, time_split


def _frame(rows: int, seed: int) -> pd.DataFrame:
    """Rows with many equal timestamps and equal keys, in a shuffled order, a gappy index."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame(
        {
            "event_timestamp": start + pd.to_timedelta(rng.integers(0, 50, rows), unit="h"),
            "customer_id": rng.integers(1, 5, rows),
            "merchant_id": rng.integers(1, 3, rows),
            "channel": rng.choice(["card_present", "online", "mobile_money"], rows),
            "amount": rng.random(rows),
            "is_fraud": rng.integers(0, 2, rows),
        }
    )
    return frame.set_axis(rng.permutation(rows) * 3)  # the index of a filtered frame


def _time_split_by_sorting(
    frame: pd.DataFrame, column: str, validation: float, test: float
) -> dict[str, pd.DataFrame]:
    """The sort-then-mask version the platform had before (the reference)."""
    ordered = frame.sort_values(column, kind="stable").reset_index(drop=True)
    times = ordered[column]
    train_end = times.quantile(1 - validation - test)
    validation_end = times.quantile(1 - test)
    masks = {
        "train": times < train_end,
        "validation": (times >= train_end) & (times < validation_end),
        "test": times >= validation_end,
    }
    return {
        name: pd.DataFrame(ordered[mask]).reset_index(drop=True) for name, mask in masks.items()
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_time_split_equals_sorting_then_masking(seed: int) -> None:
    frame = _frame(2_000, seed)
    splits = time_split(frame, "event_timestamp", 0.15, 0.15)
    expected = _time_split_by_sorting(frame, "event_timestamp", 0.15, 0.15)
    assert list(splits) == ["train", "validation", "test"]
    for name, part in splits.items():
        pd.testing.assert_frame_equal(part, expected[name])
        assert isinstance(part.index, pd.RangeIndex)


def test_time_split_names_the_empty_split() -> None:
    frame = _frame(100, 0).assign(event_timestamp=pd.Timestamp("2026-01-01", tz="UTC"))
    with pytest.raises(ValueError, match="the train split is empty"):
        time_split(frame, "event_timestamp", 0.15, 0.15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snapshot_id_sorted_by_keys_is_the_id_of_the_sorted_frame(seed: int) -> None:
    frame = _frame(2_000, seed)
    keys = ["event_timestamp", "customer_id", "merchant_id"]
    assert snapshot_id(frame, sort_by=keys) == snapshot_id(frame.sort_values(keys))
    assert snapshot_id(frame, sort_by=keys[:1]) == snapshot_id(frame.sort_values(keys[:1]))
    assert snapshot_id(frame) != snapshot_id(frame, sort_by=keys)  # the order counts
