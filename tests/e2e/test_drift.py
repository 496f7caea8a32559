"""Drift monitoring end to end: real Evidently, MLflow, Feast and Dagster, in process.

The loans example (XGBoost, fast) is trained once on undrifted data. Each test then appends a
scored window later in time to the label source, scores it with the champion and materializes
``loan_default/drift_report``: with credit_score and debt_ratio shifted the report flags exactly
those two inputs, its check fails with severity WARN, the Evidently HTML is written and the drift
is audited and alerted; a window from the training distribution is no drift; 50 rows are
insufficient data, never drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.lifecycle.records import DriftReportRecord, current_drift_report
from ml_platform.lifecycle.reference import reference_root
from ml_platform.registry.client import ModelRegistry
from tests.e2e import loans

MODEL = loans.MODEL
DRIFT_REPORT = dg.AssetKey([MODEL, "drift_report"])
PREDICTIONS = dg.AssetKey([MODEL, "predictions"])
INPUTS = {"credit_score", "debt_ratio", "amount"}
DECIDED = "decided_at"  # when a loan's outcome (the label) became known
LABEL_DELAY = timedelta(days=20)
NOT_YET = pd.Timestamp("2100-01-01", tz="UTC")
TRAINING_START = pd.Timestamp("2025-01-01", tz="UTC")  # loans.good_frames: 300 days from here


World = loans.TrainedWorld


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The loans model trained once on undrifted data (its own ML_PLATFORM_HOME)."""
    with loans.trained_world(
        tmp_path_factory.mktemp("drift"),
        frames=loans.frames_with_label_time(DECIDED, LABEL_DELAY),
        feature_spec=loans.features_with_label_time(DECIDED),
        model={"flavor": "xgboost", "params": {"n_estimators": 40}},
        label={"source": "loan_outcomes", "column": "defaulted", "available_at_column": DECIDED},
        monitoring={"retrain_on": {"drift_share": 0.5}},
    ) as trained:
        yield trained


def window_start(day: int) -> pd.Timestamp:
    """The start of a scored window ``day`` days after the training period began."""
    return TRAINING_START + pd.Timedelta(days=day)  # pyright: ignore[reportReturnType]


def window_frames(
    base: dict[str, pd.DataFrame], rows: int, seed: int, day: int, shifted: bool
) -> dict[str, pd.DataFrame]:
    """The sources with five days of loan applications from ``day`` on appended.

    With ``shifted``, every applicant gets a new bureau report just before ``day`` with credit
    score and debt ratio shifted (covariate drift); the loan amount keeps its distribution. The
    outcomes follow the training data's rule on the features in effect, and a third of them is
    not known yet (decided in the far future). Each test scores its own days, so a window given
    by time range holds only its rows.
    """
    bureau = base["bureau_reports"]
    current = bureau
    if shifted:
        current = bureau.assign(
            reported_at=window_start(day) - pd.Timedelta(days=2),
            credit_score=bureau["credit_score"] + 150.0,
            debt_ratio=(bureau["debt_ratio"] + 0.6).clip(upper=1.6),
        )
    rng = np.random.default_rng(seed)
    new = loans.good_frames(rows=rows, seed=seed)["loan_outcomes"]
    applicant = new["applicant_id"].to_numpy()
    score = current["credit_score"].to_numpy()[applicant]
    debt = current["debt_ratio"].to_numpy()[applicant]
    logit = -2.0 - (score - 620) / 40 + 2.0 * debt + 0.3 * (np.log(new["amount"]) - 7)
    applied = window_start(day) + pd.to_timedelta(rng.integers(0, 5 * 86400, rows), "s")
    decided = pd.Series(applied + LABEL_DELAY).where(np.arange(rows) % 3 != 2, NOT_YET)
    window = new.assign(
        loan_id=new["loan_id"] + int(base["loan_outcomes"]["loan_id"].max()) + 1,
        applied_at=applied,
        defaulted=(rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        **{DECIDED: pd.to_datetime(decided, utc=True)},
    )
    return {
        "bureau_reports": pd.concat([bureau, current], ignore_index=True) if shifted else bureau,
        "loan_outcomes": pd.concat([base["loan_outcomes"], window], ignore_index=True),
    }


def score_and_report(
    world: World, frames: dict[str, pd.DataFrame], config: dict[str, Any] | None = None
) -> tuple[DriftReportRecord, dg.ExecuteInProcessResult]:
    """Write the sources, score the newest window, materialize the drift report."""
    loans.write_frames(world.settings, frames)
    job = world.defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=world.instance,
        asset_selection=[PREDICTIONS, DRIFT_REPORT],
        run_config={"ops": {f"{MODEL}__drift_report": {"config": config or {}}}},
    )
    assert result.success
    return current_drift_report(world.settings, MODEL), result


def materialization_metadata(result: dg.ExecuteInProcessResult) -> Mapping[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == DRIFT_REPORT]
    return event.materialization.metadata


def drift_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "no_significant_drift"
    return evaluation


def audit_actions(world: World) -> list[str]:
    return [event.action for event in AuditLog(world.settings.audit_url).events(MODEL)]


@pytest.mark.slow
def test_the_reference_is_stored_with_the_version(world: World, tmp_path: Path) -> None:
    registry = ModelRegistry.for_settings(world.settings)
    version = registry.champion_version(MODEL)
    assert version == "1"
    stored = Path(reference_root(world.settings, MODEL, version))
    statistics = json.loads((stored / "statistics.json").read_text())
    assert set(statistics["columns"]) == INPUTS
    assert statistics["prediction"]["kind"] == "numeric"
    assert len(pd.read_parquet(stored / "sample.parquet")) > 1000
    downloaded = registry.download_reference(MODEL, version, str(tmp_path))
    assert json.loads((downloaded / "statistics.json").read_text()) == statistics


@pytest.mark.slow
def test_a_shifted_window_flags_the_shifted_features(world: World) -> None:
    frames = window_frames(world.frames, 1500, seed=21, day=310, shifted=True)
    alerts_before = audit_actions(world).count("alert")
    record, result = score_and_report(world, frames)

    assert record.status == "drift" and record.rows == 1500
    assert set(record.drifted_features) == {"credit_score", "debt_ratio"}
    assert record.retrain_reasons == ["drift_share"]
    assert record.model_version == "1"
    # Performance drift on the 1,000 rows whose labels have arrived (500 are not known yet).
    assert record.performance is not None and record.performance.rows == 1000
    assert record.performance.metric == "roc_auc" and record.performance.reference is not None
    assert record.html_path is not None
    html = Path(record.html_path).read_text()
    assert "credit_score" in html and len(html) > 10_000
    assert Path(record.html_path).parent.name == record.report_id

    check = drift_check(result)
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "credit_score" in (check.description or "")
    metadata = materialization_metadata(result)
    assert metadata["drift_score/credit_score"].value >= 0.1
    assert metadata["drift_score/amount"].value < 0.1
    assert metadata["drift_share"].value == pytest.approx(2 / 3)
    assert metadata["html_report"].value == record.html_path
    # The picture of each column's drift against its threshold, beside the report and inline.
    assert set(record.plots) == {"drift_scores"}
    assert Path(record.plots["drift_scores"]).read_bytes()[:4] == b"\x89PNG"
    assert Path(record.plots["drift_scores"]).parent.name == record.report_id
    assert metadata["plots"].value.count("](data:image/png;base64,") == 1
    assert {"performance_current", "performance_reference", "prediction_drift_score"} <= set(
        metadata
    )

    events = AuditLog(world.settings.audit_url).events(MODEL)
    detected = [e for e in events if e.action == "drift_detected"]
    assert detected[-1].details["report_id"] == record.report_id
    assert detected[-1].details["drifted_features"] == record.drifted_features
    alerts = [e for e in events if e.action == "alert"]
    assert len(alerts) == alerts_before + 1
    assert alerts[-1].details["details"]["drifted_features"] == ["credit_score", "debt_ratio"]
    assert "credit_score" in alerts[-1].details["title"]

    # The same rows judged again, read from the predictions file: the same drift event.
    again, _ = score_and_report(world, frames, {"predictions_path": record.predictions_path})
    assert again.report_id == record.report_id
    assert again.drifted_features == record.drifted_features


@pytest.mark.slow
def test_a_window_from_the_training_distribution_does_not_drift(world: World) -> None:
    frames = window_frames(world.frames, 1500, seed=22, day=320, shifted=False)
    alerts_before = audit_actions(world).count("alert")
    record, result = score_and_report(world, frames)

    assert record.status == "ok", record.reason
    assert record.drifted_features == [] and not record.prediction_drift
    assert record.retrain_reasons == []
    assert set(record.feature_scores) == INPUTS
    # Labels that arrived agree with the model as well as the evaluation's did.
    assert record.performance is not None and record.performance.rows == 1000
    assert record.performance.drop is not None and record.performance.drop < 0.1
    assert record.html_path is not None and Path(record.html_path).exists()
    assert drift_check(result).passed
    actions = audit_actions(world)
    assert actions[-1] == "drift_checked"
    assert actions.count("alert") == alerts_before

    # A window given by time range: every row scored in it (this test's days only).
    start, end = window_start(320).isoformat(), window_start(326).isoformat()
    ranged, _ = score_and_report(world, frames, {"start": start, "end": end})
    assert ranged.rows == record.rows and ranged.status == "ok"
    assert ranged.report_id == record.report_id


@pytest.mark.slow
def test_a_50_row_window_is_insufficient_data_not_drift(world: World) -> None:
    frames = window_frames(world.frames, 50, seed=23, day=330, shifted=True)
    alerts_before = audit_actions(world).count("alert")
    record, result = score_and_report(world, frames)

    assert record.status == "insufficient_data" and record.rows == 50
    assert record.drifted_features == [] and record.retrain_reasons == []
    assert record.html_path is None
    assert record.performance is not None and record.performance.status == "insufficient_data"
    check = drift_check(result)
    assert check.passed
    assert (check.description or "").startswith("insufficient data")
    actions = audit_actions(world)
    assert actions[-1] == "drift_checked"
    assert actions.count("alert") == alerts_before
