"""Hostile training data ends in a clear data-gate failure, never in a crash of the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import DataGateFailed, build_training_set
from ml_platform.features.store import apply_feature_repo
from ml_platform.lifecycle.records import StepContext
from ml_platform.lifecycle.train import train_model
from ml_platform.registry.client import ModelRegistry
from ml_platform.spec.loading import load_project
from tests.e2e import loans


def hostile(case: str) -> dict[str, pd.DataFrame]:
    frames = loans.good_frames()
    outcomes = frames["loan_outcomes"]
    if case == "inf_and_nan_in_a_feature":
        outcomes["amount"] = outcomes["amount"].astype("float64")
        outcomes.loc[outcomes.index[:30], "amount"] = np.inf
        outcomes.loc[outcomes.index[30:60], "amount"] = np.nan
    elif case == "empty_frame":
        frames["loan_outcomes"] = outcomes.head(0)
    elif case == "constant_columns":
        outcomes["amount"] = 1.0
        outcomes["defaulted"] = 1
    elif case == "wrong_dtypes":
        outcomes["amount"] = outcomes["amount"].map(lambda v: f"{v:.2f} NGN")
    elif case == "missing_label_column":
        frames["loan_outcomes"] = outcomes.drop(columns=["defaulted"])
    elif case == "unparseable_timestamps":
        outcomes["applied_at"] = "yesterday"
    else:
        raise ValueError(case)
    return frames


EXPECTED_FAILURE = {
    "inf_and_nan_in_a_feature": "expect_column_values_to_be_between(column='amount'",
    "empty_frame": "expect_table_row_count_to_be_between(",
    "constant_columns": "expect_column_unique_value_count_to_be_between(column='defaulted'",
    "wrong_dtypes": "expect_column_values_to_be_between(column='amount'",
    "missing_label_column": "expect_column_to_exist(column='defaulted'",
    "unparseable_timestamps": "expect_column_values_to_not_be_null(column='applied_at'",
}


@pytest.mark.parametrize("case", sorted(EXPECTED_FAILURE))
def test_hostile_input_fails_the_gate_not_the_trainer(
    platform_home: Path, tmp_path: Path, case: str
) -> None:
    specs = loans.write_specs(tmp_path / "specs")
    catalog = load_project(Path(__file__).resolve().parents[2], str(specs))
    spec, resolved = catalog.models[loans.MODEL], catalog.resolved[loans.MODEL]
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, hostile(case))
    apply_feature_repo(catalog.feature_repos["lending"], settings)

    manifest, report = build_training_set(spec, resolved, catalog, settings)

    assert not report.success
    assert EXPECTED_FAILURE[case] in report.summary(), report.summary()
    assert manifest.gate is not None and manifest.gate["success"] is False
    with pytest.raises(DataGateFailed, match="failed its data gate"):
        train_model(
            spec,
            resolved,
            StepContext(
                settings=settings,
                registry=ModelRegistry.for_settings(settings),
                audit=AuditLog(settings.audit_url),
            ),
        )
