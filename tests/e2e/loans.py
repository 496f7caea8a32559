"""A small lending data set with external sources (no generator), for gate tests.

Tests rewrite its parquet files to inject bad data and its spec to change the model;
``trained_world`` trains it once in a fresh home for the module-scoped e2e fixtures.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = "loan_default"
CLEARED_ENV = (
    "MLFLOW_TRACKING_URI",
    "ML_PLATFORM_DATA_ROOT",
    "ML_PLATFORM_SPEC_PATH",
    "ML_PLATFORM_DEPLOYMENT",
    "ML_PLATFORM_AUDIT_URL",
    "ML_PLATFORM_ALERT_WEBHOOK",
    "ML_PLATFORM_ALERT_HANDLER",
)
FEATURES: dict[str, Any] = {
    "kind": "features",
    "name": "lending",
    "entities": [{"name": "applicant", "join_keys": ["applicant_id"]}],
    "sources": [
        {
            "name": "bureau_reports",
            "path": "lending/bureau_reports.parquet",
            "timestamp_field": "reported_at",
            "columns": {
                "applicant_id": "int64",
                "reported_at": "timestamp",
                "credit_score": "float64",
                "debt_ratio": "float64",
            },
        },
        {
            "name": "loan_outcomes",
            "path": "lending/loan_outcomes.parquet",
            "timestamp_field": "applied_at",
            "columns": {
                "loan_id": "int64",
                "applicant_id": "int64",
                "applied_at": "timestamp",
                "amount": "float64",
                "region": "string",
                "national_id": "string",
                "defaulted": "int64",
            },
        },
    ],
    "feature_views": [
        {
            "name": "bureau",
            "entities": ["applicant"],
            "source": "bureau_reports",
            "ttl": "400d",
            "features": ["credit_score", "debt_ratio"],
            "gates": {"min_rows": 100},
        }
    ],
}


def model_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "model",
        "name": MODEL,
        "owner": "credit@example.com",
        "task": "binary_classification",
        "features": {"views": ["bureau"], "request": ["amount"]},
        "label": {"source": "loan_outcomes", "column": "defaulted"},
        "model": {"params": {"hidden_sizes": [16]}},
        "training": {"epochs": 4, "batch_size": 256, "learning_rate": 0.01},
        "evaluation": {"slices": ["region"], "min_slice_rows": 20},
        "gates": {
            "data": {"min_rows": 500, "label_balance": [0.02, 0.6], "pii_columns": ["national_id"]},
        },
        "retraining": {"schedule": "0 4 * * *"},
    }
    spec.update(changes)
    return spec


def write_specs(directory: Path, **changes: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "features.yaml").write_text(yaml.safe_dump(FEATURES, sort_keys=False))
    (directory / "model.yaml").write_text(yaml.safe_dump(model_spec(**changes), sort_keys=False))
    return directory


def good_frames(rows: int = 3000, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    applicants = 800
    start = pd.Timestamp("2025-01-01", tz="UTC")
    bureau = pd.DataFrame(
        {
            "applicant_id": np.arange(applicants, dtype=np.int64),
            "reported_at": start - pd.to_timedelta(rng.integers(1, 60, applicants), "D"),
            "credit_score": rng.normal(620, 60, applicants),
            "debt_ratio": rng.uniform(0, 1, applicants),
        }
    )
    applicant = rng.integers(0, applicants, rows)
    amount = rng.lognormal(7, 0.6, rows)
    score = bureau["credit_score"].to_numpy()[applicant]
    debt = bureau["debt_ratio"].to_numpy()[applicant]
    logit = -2.0 - (score - 620) / 40 + 2.0 * debt + 0.3 * (np.log(amount) - 7)
    outcomes = pd.DataFrame(
        {
            "loan_id": np.arange(rows, dtype=np.int64),
            "applicant_id": applicant.astype(np.int64),
            "applied_at": start + pd.to_timedelta(rng.integers(0, 300 * 86400, rows), "s"),
            "amount": amount,
            "region": rng.choice(["north", "south", "east"], rows),
            "national_id": [f"NID-{i:08d}" for i in rng.integers(0, 10**8, rows)],
            "defaulted": (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        }
    )
    return {"bureau_reports": bureau, "loan_outcomes": outcomes}


def features_with_label_time(column: str) -> dict[str, Any]:
    """``FEATURES`` with ``column``, when a loan's outcome became known, on the loan outcomes."""
    features = copy.deepcopy(FEATURES)
    features["sources"][1]["columns"][column] = "timestamp"
    return features


def frames_with_label_time(column: str, delay: timedelta) -> dict[str, pd.DataFrame]:
    """``good_frames()`` whose loan outcomes became known (``column``) ``delay`` after applying."""
    frames = good_frames()
    outcomes = frames["loan_outcomes"]
    frames["loan_outcomes"] = outcomes.assign(**{column: outcomes["applied_at"] + delay})
    return frames


def write_frames(settings: PlatformSettings, frames: dict[str, pd.DataFrame]) -> None:
    directory = Path(settings.data_path("lending"))
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(directory / f"{name}.parquet")


def bad_frames(case: str) -> dict[str, pd.DataFrame]:
    """Good data with one defect that must stop training."""
    frames = good_frames()
    outcomes = frames["loan_outcomes"]
    if case == "null_labels":
        outcomes["defaulted"] = outcomes["defaulted"].astype("float64")
        outcomes.loc[outcomes.sample(frac=0.1, random_state=1).index, "defaulted"] = np.nan
    elif case == "out_of_range_labels":
        outcomes.loc[outcomes.index[:50], "defaulted"] = 7
    elif case == "too_few_rows":
        frames["loan_outcomes"] = outcomes.head(120)
    elif case == "duplicated_key":
        frames["loan_outcomes"] = pd.concat([outcomes, outcomes.head(40)], ignore_index=True)
    elif case == "single_class":
        outcomes["defaulted"] = 0
    else:
        raise ValueError(case)
    return frames


BAD_CASES = ("null_labels", "out_of_range_labels", "too_few_rows", "duplicated_key", "single_class")


@dataclass
class TrainedWorld:
    """The loans model trained once: its definitions, instance, settings and source frames."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    settings: PlatformSettings
    frames: dict[str, pd.DataFrame]


@contextmanager
def trained_world(
    root: Path,
    *,
    frames: dict[str, pd.DataFrame] | None = None,
    feature_spec: dict[str, Any] | None = None,
    **spec_changes: Any,
) -> Iterator[TrainedWorld]:
    """Train the loans model once in a fresh ML_PLATFORM_HOME under ``root`` (env restored after).

    Args:
        root: A temporary directory; the home and the specs are written under it.
        frames: The label and feature sources to write (``good_frames()`` when omitted).
        feature_spec: The features spec to write instead of ``FEATURES``.
        **spec_changes: Top-level changes to the model spec (``model_spec``).

    Yields:
        The trained world, its ephemeral Dagster instance open until the context exits.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        home = root / "home"
        (home / "dagster").mkdir(parents=True)
        monkeypatch.setenv("ML_PLATFORM_HOME", str(home))
        monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
        for name in CLEARED_ENV:
            monkeypatch.delenv(name, raising=False)
        spec_dir = write_specs(root / "specs", **spec_changes)
        if feature_spec is not None:
            (spec_dir / "features.yaml").write_text(yaml.safe_dump(feature_spec, sort_keys=False))
        settings = PlatformSettings.from_env()
        frames = good_frames() if frames is None else frames
        write_frames(settings, frames)
        defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
        with dg.DagsterInstance.ephemeral() as instance:
            training = defs.resolve_job_def(f"{MODEL}_training")
            assert training.execute_in_process(instance=instance).success
            yield TrainedWorld(defs, instance, settings, frames)
