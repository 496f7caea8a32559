"""The code location: what it builds from the specs, and that loading it stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ml_platform.definitions import build_definitions

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "torch",
    "xgboost",
    "feast",
    "great_expectations",
    "evidently",
    "mlflow",
    "matplotlib",
    "sklearn",
)


def test_loading_the_code_location_imports_no_heavy_module() -> None:
    code = (
        "import gc, sys, json\n"
        "import ml_platform.definitions as d\n"
        "before = gc.get_freeze_count()\n"
        "defs = d.defs()\n"
        "built = gc.get_freeze_count()\n"
        "defs.get_repository_def().get_all_jobs()\n"
        "print(json.dumps([[m for m in " + repr(HEAVY) + " if m in sys.modules], before, built]))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    heavy, before, built = json.loads(output.strip().splitlines()[-1])
    assert heavy == []
    # The load moved what the process imported, and the definitions, out of the collector's
    # generations: what Dagster imported and the definitions themselves are not scanned again.
    assert before == 0
    assert built > 0


def test_graph_follows_the_asset_key_contract(platform_home: Path) -> None:
    defs = build_definitions(PROJECT_ROOT, spec_path="")
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for asset in ("training_set", "model", "evaluation", "champion", "predictions", "deployment"):
        assert f"fraud_detection/{asset}" in keys
    for view in ("customer_profile", "customer_activity", "merchant_profile", "merchant_activity"):
        assert f"features/{view}" in keys
    graph = defs.resolve_asset_graph()
    parents = {
        k.to_user_string()
        for k in graph.get(dg.AssetKey(["fraud_detection", "training_set"])).parent_keys
    }
    assert parents == {
        "sources/transactions",
        "features/customer_profile",
        "features/customer_activity",
        "features/merchant_profile",
        "features/merchant_activity",
    }
    assert defs.resolve_job_def("fraud_detection_training") is not None
    assert defs.resolve_job_def("fraud_detection_scoring") is not None
    schedule = defs.resolve_schedule_def("fraud_detection_retraining_schedule")
    assert schedule.cron_schedule == "0 3 * * 1"
    # The deployment is built by its own job and sensor only: not by training, not by automation.
    deployment = dg.AssetKey(["fraud_detection", "deployment"])
    assert {k.to_user_string() for k in graph.get(deployment).parent_keys} == {
        "fraud_detection/champion"
    }
    assert graph.get(deployment).automation_condition is None
    training = defs.resolve_job_def("fraud_detection_training")
    assert deployment not in training.asset_layer.asset_graph.executable_asset_keys
    canary_job = defs.resolve_job_def("start_canary_fraud_detection")
    assert canary_job.asset_layer.asset_graph.executable_asset_keys == {deployment}
    assert defs.resolve_sensor_def("canary_fraud_detection").minimum_interval_seconds == 30


def test_assets_show_owners_descriptions_columns_and_view_freshness(platform_home: Path) -> None:
    defs = build_definitions(PROJECT_ROOT, spec_path="")
    graph = defs.resolve_asset_graph()
    model = graph.get(dg.AssetKey(["fraud_detection", "model"]))
    assert model.owners == ["risk-ml@example.com"]
    assert "scored in batch for review queues" in (model.description or "")
    for key in (["sources", "transactions"], ["features", "customer_activity"]):
        schema = graph.get(dg.AssetKey(key)).metadata["dagster/column_schema"].schema
        assert "customer_id" in [column.name for column in schema.columns], key
    views = {k for k in graph.get_all_asset_keys() if k.path[0] == "features"}
    checks = {
        key.asset_key: graph.get_check_spec(key)
        for key in graph.asset_check_keys
        if key.name == "fresh_within_ttl"
    }
    assert set(checks) == views
    assert not any(spec.blocking for spec in checks.values())  # a warning, never a gate


def test_one_bad_spec_hides_no_other_model(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_dir = tmp_path / "specs"
    bad_dir.mkdir()
    (bad_dir / "broken.yaml").write_text(
        yaml.safe_dump(
            {
                "kind": "model",
                "name": "broken",
                "owner": "x@example.com",
                "task": "regression",
                "features": {"views": ["no_such_view"]},
                "label": {"source": "transactions", "column": "amount"},
            }
        )
    )
    defs = build_definitions(PROJECT_ROOT, spec_path=str(bad_dir))
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "fraud_detection/model" in keys
    assert "invalid_specs/broken_0" in keys
    placeholder = defs.resolve_assets_def(dg.AssetKey(["invalid_specs", "broken_0"]))
    description = placeholder.specs_by_key[dg.AssetKey(["invalid_specs", "broken_0"])].description
    assert "features.views[0]: unknown feature view 'no_such_view'" in (description or "")

    monkeypatch.setenv("ML_PLATFORM_STRICT", "1")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="no_such_view"):
        build_definitions(PROJECT_ROOT, spec_path=str(bad_dir))


def test_dagster_validates_the_workspace() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mlflow_client_leaves_the_users_environment_alone(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from ml_platform.core.settings import PlatformSettings
    from ml_platform.registry.client import ModelRegistry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = ModelRegistry.for_settings(PlatformSettings.from_env())
    registry.ensure_experiment("environment_check")
    with registry.fluent():  # the one place that sets MLflow's global URIs
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ  # later settings must not inherit it
