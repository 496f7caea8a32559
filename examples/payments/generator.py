"""The example's entry points: `generate` writes the tables, `generate_frames` returns them.

`generate` is the payments feature repo's `generator.function`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from examples.payments.aggregates import customer_daily_stats_frame, merchant_daily_stats_frame
from examples.payments.config import TABLE_SCHEMAS, TABLES, validate_settings
from examples.payments.entities import (
    customer_profile_frame,
    draw_customers,
    draw_merchants,
    merchant_profile_frame,
)
from examples.payments.transactions import draw_payments, transactions_frame
from ml_platform.core.storage import write_atomically

# One independent random stream each, so that how one part draws cannot shift another's numbers.
STREAMS = ("customers", "merchants", "regular", "episodes", "rows", "drift")


def generate(
    outputs: Mapping[str, str | os.PathLike],
    *,
    n_transactions: int = 100_000,
    seed: int = 7,
    start: str = "2026-01-01",
    days: int = 180,
    n_customers: int | None = None,
    n_merchants: int | None = None,
    drift_start: str | None = None,
    drift_strength: float = 1.0,
) -> dict[str, int]:
    """Generate the five fraud-detection tables and write each to its parquet file.

    Each file is written to a temporary file in the target directory and then moved into place,
    so a reader never sees a half-written file. Parent directories are created as needed.

    Args:
        outputs: Table name to parquet file path, for exactly the names in `TABLES`.
        n_transactions: Number of payments, at least 1,000.
        seed: Seed for all randomness; the same seed gives identical data.
        start: First instant of the period (a date or timestamp, UTC unless it says otherwise).
        days: Length of the period in days, 30 to 3,650.
        n_customers: Customer count; defaults to about one customer per 20 payments.
        n_merchants: Merchant count; defaults to about one merchant per 200 payments.
        drift_start: If set (not None or ""), payments at or after this instant drift (see
            `generate_frames`).
        drift_strength: Size of the drift, 0 (none) to 5; 1 is the reference drift.

    Returns:
        Row count per table name.

    Raises:
        ValueError: If a table name is unknown or missing, a path is invalid, or a parameter is
            out of range.
    """
    paths = _validate_outputs(outputs)
    frames = generate_frames(
        n_transactions=n_transactions,
        seed=seed,
        start=start,
        days=days,
        n_customers=n_customers,
        n_merchants=n_merchants,
        drift_start=drift_start,
        drift_strength=drift_strength,
    )
    for table in TABLES:
        _write_parquet(frames[table], TABLE_SCHEMAS[table], paths[table])
    return {table: len(frames[table]) for table in TABLES}


def generate_frames(
    *,
    n_transactions: int = 100_000,
    seed: int = 7,
    start: str = "2026-01-01",
    days: int = 180,
    n_customers: int | None = None,
    n_merchants: int | None = None,
    drift_start: str | None = None,
    drift_strength: float = 1.0,
) -> dict[str, pd.DataFrame]:
    """Generate the five fraud-detection tables in memory.

    Drift, when `drift_start` is set, changes only payments at or after it: amounts scale by
    about 1.6 ** drift_strength, the channel mix moves toward mobile money, customers from
    `GROWING_REGION` make a larger share of payments, more payments happen at night, and a new
    fraud ring targets mobile-money payments in `FRAUD_RING_CATEGORY`. Everything before
    `drift_start` is identical to a run without drift.

    Transactions are sorted by `event_timestamp`, with `transaction_id` counting up in that
    order; the profile and daily-statistics tables are sorted by id, then time. About 1.3% of
    payments are fraud without drift. Night means 00:00-05:59 UTC. `distinct_merchants_7d` is
    exact, not approximated.

    Args:
        n_transactions: Number of payments, at least 1,000.
        seed: Seed for all randomness; the same seed gives identical data.
        start: First instant of the period (a date or timestamp, UTC unless it says otherwise).
        days: Length of the period in days, 30 to 3,650.
        n_customers: Customer count; defaults to about one customer per 20 payments.
        n_merchants: Merchant count; defaults to about one merchant per 200 payments.
        drift_start: If set (not None or ""), payments at or after this instant drift.
        drift_strength: Size of the drift, 0 (none) to 5; 1 is the reference drift.

    Returns:
        Table name to DataFrame, with the columns and dtypes of `TABLE_SCHEMAS`.

    Raises:
        ValueError: If a parameter is out of range.
    """
    settings = validate_settings(
        n_transactions=n_transactions,
        seed=seed,
        start=start,
        days=days,
        n_customers=n_customers,
        n_merchants=n_merchants,
        drift_start=drift_start,
        drift_strength=drift_strength,
    )
    children = np.random.SeedSequence(settings.seed).spawn(len(STREAMS))
    streams: dict[str, np.random.Generator] = {
        name: np.random.default_rng(child) for name, child in zip(STREAMS, children, strict=True)
    }
    customers = draw_customers(settings, streams["customers"])
    merchants = draw_merchants(settings, streams["merchants"])
    payments = draw_payments(settings, customers, merchants, streams)
    return {
        "transactions": transactions_frame(payments),
        "customer_profile": customer_profile_frame(customers),
        "customer_daily_stats": customer_daily_stats_frame(settings, payments),
        "merchant_daily_stats": merchant_daily_stats_frame(settings, payments),
        "merchant_profile": merchant_profile_frame(merchants),
    }


def _validate_outputs(outputs: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    if not isinstance(outputs, Mapping):
        raise ValueError(
            f"outputs must map table names to parquet paths, got {type(outputs).__name__}"
        )
    unknown = sorted(str(name) for name in outputs if name not in TABLES)
    missing = [name for name in TABLES if name not in outputs]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown table(s) {unknown}")
        if missing:
            problems.append(f"missing table(s) {missing}")
        raise ValueError(
            f"outputs has {' and '.join(problems)}; pass exactly these tables: {list(TABLES)}"
        )
    paths: dict[str, Path] = {}
    for name in TABLES:
        value = outputs[name]
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise ValueError(f"outputs[{name!r}] must be a parquet file path, got {value!r}")
        paths[name] = Path(os.fspath(value))
    resolved = [path.resolve() for path in paths.values()]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"outputs must name a different file for each table, got {outputs!r}")
    return paths


def _write_parquet(frame: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    write_atomically(path, lambda temporary: pq.write_table(table, temporary))
