"""What the catalog shows is readable: rounded numbers, no nulls, tables with schemas, every gate's
measured number against its bound, links into the MLflow UI that keep their route, and a stale
feature view's freshness warning."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.metadata import (
    evaluation_check_results,
    evaluation_metadata,
    freshness_check_result,
    model_metadata,
    owners,
    readable,
)
from ml_platform.evaluation.gates import EVALUATION_GATES, evaluation_gates
from ml_platform.evaluation.report import EvaluationReport
from ml_platform.lifecycle.records import ModelRecord
from ml_platform.registry.client import ModelRegistry
from ml_platform.spec.model import EvaluationGateSpec

SLICES = {
    "region": {
        "north": {"rows": 120.0, "roc_auc": 0.81234, "recall": 0.61},
        "south": {"rows": 95.0, "roc_auc": 0.74321, "recall": 0.52},
        "east": {"rows": 12.0},  # too few rows for metrics
    }
}
METRICS = {"roc_auc": 0.8399650621, "log_loss": 0.4286, "latency_ms_per_1k_rows": 2.7413}
GATES = EvaluationGateSpec.model_validate(
    {
        "min": {"roc_auc": 0.7},
        "max": {"log_loss": 0.6},
        "slices": [
            {"column": "region", "min": {"recall": 0.55}, "max_disparity": {"roc_auc": 0.1}}
        ],
        "max_latency_ms_per_1k_rows": 50,
    }
)


def _report(champion: dict[str, float] | None) -> EvaluationReport:
    gates = evaluation_gates("roc_auc", METRICS, SLICES, champion, GATES)
    return EvaluationReport(
        model="loans",
        version="2",
        snapshot_id="abc",
        primary_metric="roc_auc",
        metrics=METRICS,
        slices=SLICES,
        champion_version="1" if champion else None,
        champion_metrics=champion,
        gates=[{**gate.__dict__} for gate in gates],
        threshold=0.5,
    )


def test_every_gate_check_carries_its_measured_number_and_bound() -> None:
    results = evaluation_check_results(_report(champion={"roc_auc": 0.86}))

    assert [r.check_name for r in results] == list(EVALUATION_GATES)
    for result in results:
        metadata = result.metadata
        assert isinstance(metadata["measured"], dg.FloatMetadataValue), result.check_name
        assert isinstance(metadata["bound"], dg.FloatMetadataValue), result.check_name
        table = metadata["checks"]
        assert isinstance(table, dg.TableMetadataValue) and table.schema is not None
        assert [c.name for c in table.schema.columns] == [
            "check",
            "measured",
            "bound",
            "side",
            "passed",
        ]
    by_name = {r.check_name: r for r in results}
    # The slice gate: the failing slice (south's recall 0.52 < 0.55) is its headline number.
    slices = by_name["slices_meet_thresholds"]
    assert not slices.passed
    assert slices.metadata["checked"].value == "region=south: recall"
    assert slices.metadata["measured"].value == 0.52 and slices.metadata["bound"].value == 0.55
    table = slices.metadata["checks"]
    assert isinstance(table, dg.TableMetadataValue)
    checked = [record.data["check"] for record in table.records]
    assert checked == [
        "region=north: recall",
        "region=south: recall",
        "region: roc_auc disparity",
    ]
    # Regression: how much worse than the champion, against the tolerance.
    regression = by_name["no_regression_vs_champion"]
    assert regression.metadata["measured"].value == pytest.approx(0.02003, abs=1e-4)
    assert regression.metadata["bound"].value == 0.01
    latency = by_name["latency_within_bound"]
    assert latency.passed and latency.metadata["measured"].value == 2.741


def test_an_unbounded_gate_still_shows_what_it_measured() -> None:
    gates = evaluation_gates("roc_auc", METRICS, SLICES, None, EvaluationGateSpec())
    shown = {g.name: g.binding_check() for g in gates}

    assert shown["metrics_meet_thresholds"] is not None
    assert shown["metrics_meet_thresholds"].measured == METRICS["roc_auc"]
    assert shown["slices_meet_thresholds"] is not None
    assert shown["slices_meet_thresholds"].measured == pytest.approx(0.81234 - 0.74321)
    assert shown["slices_meet_thresholds"].bound is None
    assert shown["no_regression_vs_champion"] is None  # no champion: nothing to compare


def test_a_report_stored_before_gate_checks_still_renders() -> None:
    stored = _report(champion=None).to_dict()
    for gate in stored["gates"]:
        del gate["checks"]
    results = evaluation_check_results(EvaluationReport.from_dict(stored))

    assert all("measured" not in r.metadata and r.metadata["reason"] for r in results)


def test_evaluation_metadata_is_rounded_tabular_and_has_no_nulls() -> None:
    metadata = evaluation_metadata(
        _report(champion=None),
        {"mlflow_model_version": "http://mlflow.example:5001/#/models/loans/versions/2"},
    )

    assert metadata["roc_auc"] == 0.84  # 0.83996... to four significant digits
    assert metadata["latency_ms_per_1k_rows"] == 2.741
    assert "champion_version" not in metadata  # absent, not null
    slices = metadata["slices"]
    assert isinstance(slices, dg.TableMetadataValue) and slices.schema is not None
    assert [c.name for c in slices.schema.columns] == [
        "slice",
        "value",
        "rows",
        "recall",
        "roc_auc",
    ]
    rows = {record.data["value"]: record.data for record in slices.records}
    assert rows["north"] == {
        "slice": "region",
        "value": "north",
        "rows": 120,
        "recall": 0.61,
        "roc_auc": 0.8123,
    }
    assert rows["east"]["roc_auc"] == ""  # a metric a small slice lacks: an empty cell
    gates = metadata["gates"]
    assert isinstance(gates, dg.TableMetadataValue)
    assert [record.data["gate"] for record in gates.records] == list(EVALUATION_GATES)
    link = metadata["mlflow_model_version"]
    assert link == dg.MetadataValue.url("http://mlflow.example:5001/#/models/loans/versions/2")


def _record(url: str, resumed_from: int | None = None) -> ModelRecord:
    return ModelRecord(
        "loans", "3", "run9", url, "abc", "code", 14, 17, resumed_from,
        11375.4, "cpu", 0.48062712064633767, "2026-01-03T00:00:00", flavor="xgboost",
    )  # fmt: skip


def test_model_links_keep_their_route_into_the_configured_mlflow_ui(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ML_PLATFORM_MLFLOW_UI_URL", "http://user:secret@127.0.0.1:5099/")
    registry = ModelRegistry(tracking_uri="sqlite:///x.db", artifact_root="/tmp/a")
    run_url = registry.run_url("4", "run9")
    metadata = model_metadata(
        _record(run_url), registry.version_url("loans", "3"), "Predicts loan default."
    )

    assert metadata["mlflow_run"] == dg.MetadataValue.url(
        "http://127.0.0.1:5099/#/experiments/4/runs/run9"
    )
    assert metadata["mlflow_model_version"] == dg.MetadataValue.url(
        "http://127.0.0.1:5099/#/models/loans/versions/3"
    )
    assert metadata["validation_loss"] == 0.4806
    assert metadata["samples_per_second"] == 11375
    assert metadata["description"] == "Predicts loan default."
    assert "resumed_from_epoch" not in metadata  # absent, not null
    assert model_metadata(_record(run_url, resumed_from=3))["resumed_from_epoch"] == 3


def test_the_mlflow_ui_is_the_tracking_server_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ML_PLATFORM_MLFLOW_UI_URL", "MLFLOW_UI_URL", "DAGSTER_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    server = ModelRegistry(tracking_uri="https://mlflow.example/", artifact_root="s3://b/a")
    local = ModelRegistry(tracking_uri="sqlite:///x.db", artifact_root="/tmp/a")
    configured = ModelRegistry(
        tracking_uri="https://mlflow.example",
        artifact_root="s3://b/a",
        ui_url="https://ui.example:8443",
        dagster_ui_url="http://dagster.example:3001/",
    )

    assert server.version_url("m", "1") == "https://mlflow.example/#/models/m/versions/1"
    assert local.run_url("0", "r") == "http://127.0.0.1:5000/#/experiments/0/runs/r"
    assert configured.run_url("0", "r") == "https://ui.example:8443/#/experiments/0/runs/r"
    assert local.dagster_run_url("abc") == "http://127.0.0.1:3000/runs/abc"
    assert configured.dagster_run_url("abc") == "http://dagster.example:3001/runs/abc"
    monkeypatch.setenv("DAGSTER_UI_URL", "http://127.0.0.1:3999")
    assert local.dagster_run_url("abc") == "http://127.0.0.1:3999/runs/abc"


def test_a_feature_view_older_than_its_ttl_warns_with_its_staleness_in_hours() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    stale = freshness_check_result(now - timedelta(hours=3700), "7d", 168.0, now, "payments")
    fresh = freshness_check_result(now - timedelta(hours=30), "7d", 168.0, now, "payments")

    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert "3,700 hours old: older than the view's TTL of 7d (168 hours)" in (
        stale.description or ""
    )
    assert stale.metadata["measured"].value == 3700 and stale.metadata["bound"].value == 168
    assert fresh.passed and fresh.metadata["measured"].value == 30
    missing = freshness_check_result(None, "7d", 168.0, now, "payments")
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.WARN


@pytest.mark.parametrize(
    ("owner", "shown"),
    [
        ("credit@example.com", ["credit@example.com"]),
        ("team:fraud", ["team:fraud"]),
        ("fraud-team", ["team:fraud-team"]),
        ("", []),
    ],
)
def test_spec_owners_become_dagster_owners(owner: str, shown: list[str]) -> None:
    assert owners(owner) == shown


def test_readable_rounds_floats_and_leaves_out_absent_values() -> None:
    shown = readable({"a": 0.123456, "b": None, "c": math.nan, "d": 7, "e": True, "f": 123456.7})

    assert shown == {"a": 0.1235, "d": 7, "e": True, "f": 123500.0}
