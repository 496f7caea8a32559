"""The drift report's wiring without engines: record, retrain triggers, metadata, check, alert."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.metadata import drift_check_result, drift_report_metadata
from ml_platform.core import storage
from ml_platform.core.alerts import drift_alert, send_alert
from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.lifecycle.monitor import drift_report_id, drift_settings, retrain_reasons
from ml_platform.lifecycle.records import (
    DriftReportRecord,
    current_drift_report,
    model_root,
)
from ml_platform.lifecycle.reference import VersionReference
from ml_platform.lifecycle.scored_window import utc, window_snapshot
from ml_platform.monitoring.drift import ColumnVerdict, DriftResult
from ml_platform.monitoring.performance import PerformanceVerdict
from ml_platform.monitoring.reference import compute_reference
from ml_platform.spec.catalog import ResolvedFeatures
from ml_platform.spec.model import ModelSpec

SPEC = {
    "kind": "model",
    "name": "loans",
    "owner": "ds@example.com",
    "task": "binary_classification",
    "features": {"request": ["amount", "region"], "categorical": ["region"]},
    "label": {"source": "outcomes", "column": "defaulted"},
}


def spec(**monitoring: object) -> ModelSpec:
    return ModelSpec.model_validate({**SPEC, "monitoring": monitoring})


def verdict(column: str, drifted: bool, status: str = "ok") -> ColumnVerdict:
    status = "drift" if drifted else status
    score = None if status == "insufficient_data" else (0.4 if drifted else 0.02)
    return ColumnVerdict(column, "numeric", "wasserstein", score, 0.1, drifted, status)  # type: ignore[arg-type]


def result(drifted: list[str], prediction: bool = False, status: str | None = None) -> DriftResult:
    columns = [verdict(c, c in drifted) for c in ("amount", "region", "score")]
    share = len(drifted) / 3
    return DriftResult(
        columns=columns,
        drift_share=share,
        dataset_drift=share >= 0.5,
        prediction=verdict("prediction", prediction),
        rows=1000,
        status=status or ("drift" if share >= 0.5 or prediction else "ok"),  # type: ignore[arg-type]
    )


def performance(drop: float | None) -> PerformanceVerdict:
    return PerformanceVerdict("roc_auc", 0.8 - (drop or 0), 0.8, drop, 400, "ok")


def record(**changes: object) -> DriftReportRecord:
    values: dict = {
        "model": "loans",
        "model_version": "3",
        "report_id": "abc123",
        "status": "drift",
        "drift_share": 2 / 3,
        "drifted_features": ["amount", "region"],
        "prediction_drift": True,
        "performance": PerformanceVerdict("roc_auc", 0.71, 0.8, 0.09, 400, "ok"),
        "rows": 1000,
        "html_path": "/tmp/models/loans/drift/abc123/report.html",
        "created_at": "2025-01-01T00:00:00+00:00",
        "retrain_reasons": ["drift_share"],
        "feature_scores": {"amount": 0.4, "region": 0.3, "score": None},
        "prediction_drift_score": 1e-9,
        "reason": "2 of 3 inputs drifted",
        "column_verdicts": [verdict("amount", True).to_dict(), verdict("score", False).to_dict()],
    }
    values.update(changes)
    return DriftReportRecord(**values)


@pytest.mark.parametrize(
    ("retrain_on", "drift", "drop", "expected"),
    [
        (None, result(["amount", "region"], prediction=True), 0.5, []),
        ({"drift_share": 0.5}, result(["amount", "region"]), None, ["drift_share"]),
        ({"drift_share": 0.5}, result(["amount"]), None, []),
        ({"drift_share": 0.3}, result(["amount"]), None, ["drift_share"]),
        ({"prediction_drift": True}, result([], prediction=True), None, ["prediction_drift"]),
        ({"prediction_drift": True}, result(["amount", "region"]), None, []),
        ({"performance_drop": 0.05}, result([]), 0.05, ["performance_drop"]),
        ({"performance_drop": 0.05}, result([]), 0.01, []),
        (
            {"drift_share": 0.5, "prediction_drift": True, "performance_drop": 0.0},
            result(["amount", "region"], prediction=True),
            0.1,
            ["drift_share", "prediction_drift", "performance_drop"],
        ),
        (
            {"drift_share": 0.1, "prediction_drift": True},
            result(["amount"], prediction=True, status="insufficient_data"),
            None,
            [],
        ),
    ],
)
def test_retrain_reasons_are_the_triggers_that_fire(
    retrain_on: dict | None, drift: DriftResult, drop: float | None, expected: list[str]
) -> None:
    model = spec(retrain_on=retrain_on)
    assert retrain_reasons(model, drift, performance(drop)) == expected


def test_the_report_id_is_stable_per_version_and_window() -> None:
    first = drift_report_id("loans", "3", "window-a")
    assert first == drift_report_id("loans", "3", "window-a")
    assert first != drift_report_id("loans", "4", "window-a")
    assert first != drift_report_id("loans", "3", "window-b")


def test_the_window_snapshot_ignores_row_order_and_scores() -> None:
    frame = pd.DataFrame(
        {
            "loan_id": [1, 2, 3],
            "applied_at": pd.to_datetime(["2025-01-03", "2025-01-01", "2025-01-02"], utc=True),
            "amount": [10.0, 20.0, 30.0],
            "region": ["a", "b", "a"],
            "score": [0.1, 0.2, 0.3],
        }
    )
    resolved = ResolvedFeatures({}, ["amount", "region"], ["region"], ["loan_id"], "applied_at")
    statistics = compute_reference(frame, ["amount"], ["region"])
    reference = VersionReference(statistics, frame)
    snapshot = window_snapshot(frame, resolved, reference)
    rescored = frame.iloc[::-1].assign(score=[0.9, 0.8, 0.7])
    assert window_snapshot(rescored, resolved, reference) == snapshot
    changed = frame.assign(amount=[10.0, 20.0, 31.0])
    assert window_snapshot(changed, resolved, reference) != snapshot


def test_monitoring_columns_must_be_monitored_inputs() -> None:
    frame = pd.DataFrame({"amount": [1.0, 2.0], "region": ["a", "b"]})
    reference = VersionReference(compute_reference(frame, ["amount"], ["region"]), frame)
    settings = drift_settings(spec(columns={"amount": {"test": "psi"}}), reference)
    assert settings.columns["amount"].test == "psi"
    with pytest.raises(ValueError, match=r"monitoring.columns: unknown column 'amont'.*'amount'"):
        drift_settings(spec(columns={"amont": {"test": "psi"}}), reference)


def test_the_record_round_trips_through_the_pointer(tmp_path: Path) -> None:
    settings = PlatformSettings.from_env(home=tmp_path)
    with pytest.raises(FileNotFoundError, match="materialize 'loans/drift_report'"):
        current_drift_report(settings, "loans")
    stored = record()
    storage.write_pointer(model_root(settings, "loans", "drift"), stored.to_dict())
    assert current_drift_report(settings, "loans") == stored
    assert current_drift_report(settings, "loans").performance == stored.performance


def test_metadata_has_plottable_floats_and_links_the_html() -> None:
    metadata = drift_report_metadata(record())
    assert metadata["drift_score/amount"] == 0.4
    assert "drift_score/score" not in metadata  # no verdict, nothing to plot
    assert metadata["drift_share"] == pytest.approx(2 / 3)
    assert metadata["prediction_drift_score"] == 1e-9
    assert metadata["performance_drop"] == pytest.approx(0.09)
    assert metadata["html_report"] == dg.MetadataValue.path(record().html_path or "")
    assert "| amount | wasserstein | 0.4 | 0.1 | drift |" in metadata["columns"].value
    remote = drift_report_metadata(record(html_path="s3://bucket/report.html"))
    assert remote["html_report"] == dg.MetadataValue.url("s3://bucket/report.html")


def test_the_check_warns_on_drift_and_passes_insufficient_data() -> None:
    drifted = drift_check_result(record())
    assert not drifted.passed and drifted.severity == dg.AssetCheckSeverity.WARN
    assert drifted.description == "drift: 2 of 3 inputs drifted"
    small = drift_check_result(
        record(status="insufficient_data", reason="the window has 50 rows", drifted_features=[])
    )
    assert small.passed
    assert small.description == "insufficient data: the window has 50 rows"
    calm = drift_check_result(record(status="ok", drifted_features=[], drift_share=0.0))
    assert calm.passed and (calm.description or "").startswith("no significant drift")


def test_a_drift_alert_names_the_drifted_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ML_PLATFORM_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("ML_PLATFORM_ALERT_HANDLER", raising=False)
    alert = drift_alert(
        "loans",
        "3",
        "abc123",
        {"amount": "wasserstein 0.4 >= 0.1", "region": "jensenshannon 0.3 >= 0.1"},
        prediction_drift="ks 1e-09 <= 0.05",
        report_url="/tmp/report.html",
    )
    assert alert.title == "Drift in loans v3: amount, region"
    assert "- feature amount drifted: wasserstein 0.4 >= 0.1" in alert.text()
    assert "- prediction drifted: ks 1e-09 <= 0.05" in alert.text()
    audit = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    settings = PlatformSettings.from_env(home=tmp_path / "elsewhere")
    assert send_alert(alert, settings, audit=audit) == ["audit"]
    (event,) = audit.events("loans", "alert")
    assert event.details["details"]["drifted_features"] == ["amount", "region"]


def test_a_naive_window_bound_is_utc() -> None:
    naive = datetime(2025, 3, 1, 12)
    assert utc(naive) == pd.Timestamp("2025-03-01T12:00:00Z")
    assert utc(naive.replace(tzinfo=UTC)) == pd.Timestamp("2025-03-01T12:00:00Z")
