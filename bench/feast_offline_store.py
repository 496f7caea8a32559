"""Feast offline stores for the training-set join at scale: rows kept and seconds.

Baseline, measured in the same run: a raw DuckDB ASOF join (the lower bound of the work).
Usage: .venv/bin/python bench/feast_offline_store.py --rows 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd

from examples.payments.generator import generate
from ml_platform.core.settings import PlatformSettings
from ml_platform.features.retrieval import historical_features
from ml_platform.features.store import apply_feature_repo
from ml_platform.spec.loading import load_project

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", default="duckdb,file")
    args = parser.parse_args()
    catalog = load_project(PROJECT_ROOT, "")
    repo = catalog.feature_repos["payments"]
    resolved = catalog.resolved["fraud_detection"]
    with tempfile.TemporaryDirectory() as home:
        base = PlatformSettings.from_env(home=Path(home))
        generate({s.name: base.data_path(s.path) for s in repo.sources}, n_transactions=args.rows)
        labels = pd.read_parquet(
            base.data_path("payments/transactions.parquet"),
            columns=["transaction_id", "customer_id", "merchant_id", "event_timestamp", "is_fraud"],
        )
        print(f"entity rows: {len(labels):,}; features: {len(resolved.feature_refs)}")
        started = time.perf_counter()
        raw_rows = asof_join(base, labels)
        raw_seconds = time.perf_counter() - started
        print(f"baseline raw DuckDB ASOF join: {raw_rows:,} rows in {raw_seconds:.2f}s")
        for store in args.stores.split(","):
            settings = replace(
                base,
                feast_offline_store={"type": store},
                feast_registry=str(Path(home) / f"registry-{store}.db"),
            )
            apply_feature_repo(repo, settings)
            started = time.perf_counter()
            joined = historical_features(settings, labels, resolved.feature_refs, "event_timestamp")
            seconds = time.perf_counter() - started
            print(
                f"feast offline store '{store}': {len(joined):,} of {len(labels):,} rows "
                f"in {seconds:.2f}s ({seconds / raw_seconds:.1f}x the raw ASOF join)"
            )


def asof_join(settings: PlatformSettings, labels: pd.DataFrame) -> int:
    """Point-in-time join of the four views with DuckDB ASOF joins (no TTL: a lower bound)."""
    del labels
    path = settings.data_path
    query = f"""
    WITH l AS (SELECT * FROM read_parquet('{path("payments/transactions.parquet")}')),
    c AS (SELECT * FROM read_parquet('{path("payments/customer_daily_stats.parquet")}')),
    p AS (SELECT * FROM read_parquet('{path("payments/customer_profile.parquet")}')),
    m AS (SELECT * FROM read_parquet('{path("payments/merchant_daily_stats.parquet")}')),
    mp AS (SELECT * FROM read_parquet('{path("payments/merchant_profile.parquet")}'))
    SELECT count(*) FROM l
    ASOF LEFT JOIN c ON l.customer_id = c.customer_id AND l.event_timestamp >= c.event_timestamp
    ASOF LEFT JOIN p ON l.customer_id = p.customer_id AND l.event_timestamp >= p.event_timestamp
    ASOF LEFT JOIN m ON l.merchant_id = m.merchant_id AND l.event_timestamp >= m.event_timestamp
    ASOF LEFT JOIN mp ON l.merchant_id = mp.merchant_id AND l.event_timestamp >= mp.event_timestamp
    """
    with duckdb.connect() as connection:
        row = connection.execute(query).fetchone()
    assert row is not None
    return int(row[0])


if __name__ == "__main__":
    main()
