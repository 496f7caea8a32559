"""A second model, on a different data set (other entity, other columns, regression), built and
trained from its spec alone: nothing in ml_platform/ changes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.lifecycle.records import current_evaluation
from ml_platform.registry.client import ModelRegistry

PROJECT_ROOT = Path(__file__).resolve().parents[2]

FEATURES = {
    "kind": "features",
    "name": "agronomy",
    "entities": [{"name": "farm", "join_keys": ["farm_id"]}],
    "sources": [
        {
            "name": "farm_weather",
            "path": "agri/farm_weather.parquet",
            "timestamp_field": "observed_at",
            "columns": {
                "farm_id": "string",
                "observed_at": "timestamp",
                "rainfall_mm_14d": "float64",
                "temperature_c_14d": "float64",
                "ndvi": "float64",
            },
        },
        {
            "name": "harvests",
            "path": "agri/harvests.parquet",
            "timestamp_field": "harvested_at",
            "columns": {
                "harvest_id": "int64",
                "farm_id": "string",
                "harvested_at": "timestamp",
                "crop": "string",
                "area_ha": "float64",
                "yield_t_per_ha": "float64",
                "county": "string",
            },
        },
    ],
    "feature_views": [
        {
            "name": "farm_weather",
            "entities": ["farm"],
            "source": "farm_weather",
            "ttl": "21d",
            "features": ["rainfall_mm_14d", "temperature_c_14d", "ndvi"],
        }
    ],
}

MODEL = {
    "kind": "model",
    "name": "crop_yield",
    "owner": "agronomy@example.com",
    "task": "regression",
    "features": {
        "views": ["farm_weather"],
        "request": ["area_ha", "crop"],
        "categorical": ["crop"],
    },
    "label": {"source": "harvests", "column": "yield_t_per_ha"},
    "model": {"params": {"hidden_sizes": [32, 16]}},
    "training": {"epochs": 15, "batch_size": 256, "learning_rate": 0.005},
    "evaluation": {"slices": ["county", "crop"], "min_slice_rows": 10},
    "retraining": {"schedule": None},
}


def write_agronomy_data(
    settings: PlatformSettings, n_farms: int = 300, n_harvests: int = 4000
) -> None:
    rng = np.random.default_rng(5)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    farms = np.array([f"KE-{i:05d}" for i in range(n_farms)])
    days = pd.date_range(start, periods=365, freq="D", tz="UTC")
    weather = pd.DataFrame(
        {
            "farm_id": np.repeat(farms, len(days) // 7 + 1)[: n_farms * (len(days) // 7 + 1)],
            "observed_at": np.tile(days[::7], n_farms),
        }
    )
    weather["rainfall_mm_14d"] = rng.gamma(2.0, 20.0, len(weather))
    weather["temperature_c_14d"] = rng.normal(24, 3, len(weather))
    weather["ndvi"] = rng.uniform(0.1, 0.9, len(weather))
    harvests = pd.DataFrame(
        {
            "harvest_id": np.arange(n_harvests),
            "farm_id": rng.choice(farms, n_harvests),
            "harvested_at": start
            + pd.to_timedelta(rng.integers(20, 360, n_harvests), "D")
            + pd.to_timedelta(rng.integers(0, 86400, n_harvests), "s"),
            "crop": rng.choice(["maize", "beans", "tea"], n_harvests),
            "area_ha": rng.uniform(0.5, 5, n_harvests),
            "county": rng.choice(["nakuru", "kisumu", "meru"], n_harvests),
        }
    )
    latest = (
        pd.merge_asof(
            harvests.sort_values("harvested_at"),
            weather.sort_values("observed_at"),
            left_on="harvested_at",
            right_on="observed_at",
            by="farm_id",
        )
        .set_index("harvest_id")
        .loc[harvests["harvest_id"]]
    )
    crop_base = harvests["crop"].map({"maize": 3.0, "beans": 1.5, "tea": 2.2}).to_numpy()
    harvests["yield_t_per_ha"] = (
        crop_base
        + 2.5 * latest["ndvi"].to_numpy()
        + 0.01 * latest["rainfall_mm_14d"].to_numpy()
        + rng.normal(0, 0.2, n_harvests)
    )
    directory = Path(settings.data_path("agri"))
    directory.mkdir(parents=True)
    weather.to_parquet(directory / "farm_weather.parquet")
    harvests.to_parquet(directory / "harvests.parquet")


@pytest.mark.slow
def test_regression_model_on_another_dataset(platform_home: Path, tmp_path: Path) -> None:
    spec_dir = tmp_path / "agri_specs"
    spec_dir.mkdir()
    (spec_dir / "features.yaml").write_text(yaml.safe_dump(FEATURES))
    (spec_dir / "model.yaml").write_text(yaml.safe_dump(MODEL))
    settings = PlatformSettings.from_env()
    write_agronomy_data(settings)

    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    with dg.DagsterInstance.ephemeral() as instance:
        for job in ("crop_yield_training", "crop_yield_scoring"):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance).success

    assert ModelRegistry.for_settings(settings).champion_version("crop_yield") == "1"
    report = current_evaluation(settings, "crop_yield")
    assert report.primary_metric == "rmse"
    assert report.metrics["r2"] > 0.5, report.metrics
    assert set(report.slices["crop"]) == {"maize", "beans", "tea"}
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"sources/harvests", "features/farm_weather", "crop_yield/predictions"} <= keys
