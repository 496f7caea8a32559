"""The loans model materialized on a real Dagster instance, MLflow (SQLite), Feast and GE shows
readable metadata and links both ways.

Data assets carry ``dagster/row_count`` and ``dagster/column_schema``; floats are rounded and
nothing is shown as null; slices and gate outcomes are tables with schemas; every evaluation gate's
check carries its measured number and bound (a run tagged ``ml_platform/force_retrain`` trains a
second version, evaluated against the first); the model and evaluation link into the configured
MLflow UI and MLflow links back to the Dagster run; the spec's description reaches the registered
model and version; the training set is the run's MLflow dataset; registering raises no MLflow
signature or input-example warning; the stale bureau view warns with its staleness in hours.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.keys import FORCE_RETRAIN_TAG
from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.evaluation.gates import EVALUATION_GATES
from ml_platform.registry.client import ModelRegistry
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MLFLOW_UI = "http://127.0.0.1:5999"
DAGSTER_UI = "http://127.0.0.1:3999"
DESCRIPTION = "Probability that a loan applicant defaults within a year."
SPEC_CHANGES: dict[str, Any] = {
    "description": DESCRIPTION,
    "model": {"flavor": "xgboost", "params": {"n_estimators": 20, "max_depth": 3}},
    "gates": {
        **loans.model_spec()["gates"],
        "evaluation": {
            "min": {"roc_auc": 0.55},
            "max": {"log_loss": 0.95},
            "slices": [{"column": "region", "max_disparity": {"roc_auc": 0.6}}],
            "max_latency_ms_per_1k_rows": 100000,
        },
    },
}


def _significant_digits(value: float) -> int:
    return len(f"{value:.15g}".lstrip("-0.").replace(".", "").rstrip("0"))


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        event.asset_key.to_user_string(): dict(event.materialization.metadata)
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


@pytest.mark.slow
def test_the_catalog_shows_readable_metadata_and_links_both_ways(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_PLATFORM_MLFLOW_UI_URL", MLFLOW_UI)
    monkeypatch.setenv("DAGSTER_UI_URL", DAGSTER_UI)
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    spec_dir = loans.write_specs(tmp_path / "specs", **SPEC_CHANGES)
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))
    job = defs.resolve_job_def(f"{loans.MODEL}_training")

    with dg.instance_for_test() as instance:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            training = job.execute_in_process(instance=instance)
        assert training.success
        # A forced retrain on unchanged inputs: a second version, evaluated against the first.
        evaluation = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey([loans.MODEL, a]) for a in ("model", "evaluation")],
            tags={FORCE_RETRAIN_TAG: "true"},
        )
        assert evaluation.success

    shown = _materializations(training)
    for key, metadata in shown.items():
        for name, value in metadata.items():
            assert not isinstance(value, dg.NullMetadataValue), f"{key}: {name} shown as null"
            if isinstance(value, dg.FloatMetadataValue) and value.value is not None:
                assert _significant_digits(value.value) <= 4, f"{key}: {name}={value.value}"

    # Data assets: row count and column schema, read from the written parquet.
    for key, rows, column in (
        ("features/bureau", 800, "credit_score"),
        (f"{loans.MODEL}/training_set", 3000, "defaulted"),
    ):
        assert shown[key]["dagster/row_count"].value == rows
        schema = shown[key]["dagster/column_schema"].value
        assert isinstance(schema, dg.TableSchema)
        assert column in [c.name for c in schema.columns]
    splits = shown[f"{loans.MODEL}/training_set"]["splits"]
    assert isinstance(splits, dg.TableMetadataValue) and splits.schema is not None

    # Model: links into the configured MLflow UI, keeping their route; the spec's description.
    model = shown[f"{loans.MODEL}/model"]
    registry = ModelRegistry.for_settings(settings)
    run = registry.training_run_of(loans.MODEL, "1")
    assert model["mlflow_run"].value == f"{MLFLOW_UI}/#/experiments/{run.experiment_id}/runs/" + (
        run.run_id
    )
    assert model["mlflow_model_version"].value == f"{MLFLOW_UI}/#/models/{loans.MODEL}/versions/1"
    assert model["description"].value == DESCRIPTION
    assert model["validation_loss"].value == round(model["validation_loss"].value, 4)

    # Evaluation: slices and gate outcomes as tables with schemas, metrics rounded.
    evaluated = shown[f"{loans.MODEL}/evaluation"]
    for table in ("slices", "gates"):
        assert isinstance(evaluated[table], dg.TableMetadataValue), table
        assert evaluated[table].schema is not None
    assert {r.data["value"] for r in evaluated["slices"].records} == {"north", "south", "east"}
    assert evaluated["mlflow_model_version"].value.endswith("/#/models/loan_default/versions/1")

    assert registry.registered_versions(loans.MODEL) == ["1", "2"]  # the run tag forced it

    # Every evaluation gate's check: its measured number and bound, as plottable floats.
    checks = {c.check_name: c for c in evaluation.get_asset_check_evaluations()}
    for gate in EVALUATION_GATES:
        metadata = checks[gate].metadata
        assert isinstance(metadata["measured"], dg.FloatMetadataValue), (gate, metadata)
        assert isinstance(metadata["bound"], dg.FloatMetadataValue), (gate, metadata)
        assert isinstance(metadata["checks"], dg.TableMetadataValue), gate
    assert checks["slices_meet_thresholds"].metadata["bound"].value == 0.6

    # MLflow links back to the Dagster run, shows the description and the training dataset.
    dagster_run_url = f"{DAGSTER_UI}/runs/{training.run_id}"
    version = registry.client.get_model_version(loans.MODEL, "1")
    assert version.tags["dagster_run_url"] == dagster_run_url
    assert version.description == DESCRIPTION
    assert registry.client.get_registered_model(loans.MODEL).description == DESCRIPTION
    mlflow_run = registry.client.get_run(run.run_id)
    assert mlflow_run.data.tags["dagster_run_url"] == dagster_run_url
    assert mlflow_run.data.tags["mlflow.source.name"] == dagster_run_url  # the run's "Source"
    assert mlflow_run.inputs is not None
    (dataset,) = [i.dataset for i in mlflow_run.inputs.dataset_inputs]
    snapshot = shown[f"{loans.MODEL}/training_set"]["data_snapshot_id"].value
    assert (dataset.name, dataset.digest) == (f"{loans.MODEL}/training_set", snapshot)
    assert "train.parquet" in dataset.source

    # Registering the version raised no MLflow signature or input-example warning.
    from_mlflow = [str(w.message) for w in caught if "mlflow" in w.filename]
    unwanted = ("input example", "signature", "Inferred schema contains integer")
    assert not [m for m in from_mlflow if any(u in m for u in unwanted)], from_mlflow

    # The bureau reports end on 2024-12-31: far older than the view's 400-day TTL.
    fresh = next(
        c for c in training.get_asset_check_evaluations() if c.check_name == "fresh_within_ttl"
    )
    assert not fresh.passed and fresh.severity == dg.AssetCheckSeverity.WARN
    staleness, ttl = fresh.metadata["measured"].value, fresh.metadata["bound"].value
    assert isinstance(staleness, float) and ttl == 9600 and staleness > 9600
    assert "hours old: older than the view's TTL of 400d" in (fresh.description or "")
