"""The training-set join through Feast's Spark offline store on one machine, against the default.

Baseline, measured in the same run: the platform's default offline store. The Spark store runs
with deploy/feast/spark-local.json (local[*]); its first call includes starting the session.
Both results are checked equal. Usage:
.venv/bin/python bench/spark_offline_store.py --rows 100000 --driver-memory 4g
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from examples.payments.generator import generate
from ml_platform.core.settings import PlatformSettings
from ml_platform.features.retrieval import historical_features
from ml_platform.features.store import apply_feature_repo
from ml_platform.spec.loading import load_project

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LABEL_COLUMNS = ["transaction_id", "customer_id", "merchant_id", "event_timestamp", "is_fraud"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--driver-memory", default="4g")
    args = parser.parse_args()
    catalog = load_project(PROJECT_ROOT, "")
    repo = catalog.feature_repos["payments"]
    refs = catalog.resolved["fraud_detection"].feature_refs
    spark = json.loads((PROJECT_ROOT / "deploy" / "feast" / "spark-local.json").read_text())
    with tempfile.TemporaryDirectory() as home:
        base = PlatformSettings.from_env(home=Path(home))
        spark["spark_conf"] |= {
            "spark.driver.memory": args.driver_memory,
            "spark.sql.warehouse.dir": str(Path(home) / "spark-warehouse"),
        }
        generate({s.name: base.data_path(s.path) for s in repo.sources}, n_transactions=args.rows)
        labels = pd.read_parquet(
            base.data_path("payments/transactions.parquet"), columns=LABEL_COLUMNS
        )
        results = {}
        seconds = {}
        for name, store, calls in (
            ("default", base.feast_offline_store, 1),
            ("spark", spark, 2),
        ):
            settings = replace(
                base, feast_offline_store=store, feast_registry=str(Path(home) / f"{name}.db")
            )
            apply_feature_repo(repo, settings)
            for call in range(calls):
                started = time.perf_counter()
                results[name] = historical_features(settings, labels, refs, "event_timestamp")
                seconds[(name, call)] = time.perf_counter() - started
                print(
                    f"{name} store, call {call + 1}: {len(results[name]):,} of {len(labels):,} "
                    f"rows in {seconds[(name, call)]:.1f}s "
                    f"({seconds[(name, call)] / seconds[('default', 0)]:.1f}x the default)",
                    flush=True,
                )
        pd.testing.assert_frame_equal(results["spark"], results["default"], check_exact=True)
        print("results equal: yes")


if __name__ == "__main__":
    main()
