"""The whole example graph, in process, on real engines: SQLite MLflow, Feast local stores,
the real trainer, on a small generated data set."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.core.storage import read_pointer
from ml_platform.definitions import build_definitions
from ml_platform.lifecycle.records import current_evaluation
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import TAG_CODE_VERSION, TAG_DAGSTER_RUN, TAG_SNAPSHOT

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud_detection"


@pytest.fixture
def small_example(platform_home: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.setenv("ML_PLATFORM_DEMO_ROWS", "30000")
    return build_definitions(PROJECT_ROOT, spec_path="")


def run_job(
    defs: dg.Definitions,
    name: str,
    instance: dg.DagsterInstance,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(name).execute_in_process(instance=instance, tags=tags)
    assert result.success
    return result


@pytest.mark.slow
def test_golden_path_end_to_end(small_example: dg.Definitions) -> None:
    settings = PlatformSettings.from_env()
    registry = ModelRegistry.for_settings(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        training = run_job(small_example, f"{MODEL}_training", instance)
        scoring = run_job(small_example, f"{MODEL}_scoring", instance)

        # Long steps say how far they got: each phase with its time and rows per second.
        lines = [e.user_message for e in instance.all_logs(training.run_id)]
        assert any(f"training set of {MODEL}: joined" in m and "rows/s" in m for m in lines)
        assert any(m.startswith("feature view") and "materialized" in m for m in lines)

        versions = registry.registered_versions(MODEL)
        assert versions == ["1"]
        assert registry.champion_version(MODEL) == "1"
        tags = registry.version_tags(MODEL, "1")
        assert tags[TAG_DAGSTER_RUN] == training.run_id
        assert tags[TAG_SNAPSHOT]
        assert tags[TAG_CODE_VERSION]

        # Predictions: one score per scored row, written by the champion.
        record = read_pointer(settings.data_path("models", MODEL, "predictions"))
        assert record is not None
        predictions = pd.read_parquet(record["path"])
        assert len(predictions) == record["rows"] > 0
        assert predictions["score"].between(0, 1).all()
        assert predictions["score"].notna().all()
        assert predictions["transaction_id"].is_unique
        assert (predictions["model_version"] == "1").all()

        scored = AuditLog(settings.audit_url).events(MODEL, "scored")
        assert [e.model_version for e in scored] == ["1"]
        assert scored[0].dagster_run_id == scoring.run_id
        assert scored[0].rows == len(predictions)

        materialization = instance.get_latest_materialization_event(dg.AssetKey([MODEL, "model"]))
        assert materialization is not None
        metadata = materialization.asset_materialization.metadata  # type: ignore[union-attr]
        assert metadata["mlflow_run"].value.startswith("http")
        assert metadata["model_version"].value == "1"

        evaluation = current_evaluation(settings, MODEL)
        for metric in ("roc_auc", "pr_auc", "precision", "recall", "f1", "calibration_error"):
            assert metric in evaluation.metrics
        assert evaluation.metrics["roc_auc"] > 0.6
        assert set(evaluation.slices["region"]) >= {"lagos", "nairobi"}

        # The evaluation's pictures: stored beside the report, logged to the training run, and
        # shown inline in the asset's metadata with the threshold behind precision and recall.
        pictures = {"roc", "precision_recall", "confusion_matrix", "calibration"}
        assert pictures | {"score_distribution", "slices"} == set(evaluation.plots)
        assert all(
            Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            for path in evaluation.plots.values()
        )
        run_id = registry.training_run_of(MODEL, "1").run_id
        logged = {a.path for a in registry.client.list_artifacts(run_id, "evaluation/plots")}
        assert {f"evaluation/plots/{name}.png" for name in pictures} <= logged
        shown = instance.get_latest_materialization_event(dg.AssetKey([MODEL, "evaluation"]))
        assert shown is not None
        shown_metadata = shown.asset_materialization.metadata  # type: ignore[union-attr]
        assert shown_metadata["threshold"].value == evaluation.threshold == 0.3
        assert shown_metadata["plots"].value.count("](data:image/png;base64,") == len(
            evaluation.plots
        )

        # Retraining on the same data, parameters and code reuses version 1; a forced retraining
        # registers version 2 and compares it with the champion on the same test rows; the alias
        # moves only if the challenger is better.
        run_job(small_example, f"{MODEL}_training", instance)
        assert registry.registered_versions(MODEL) == ["1"]
        assert current_evaluation(settings, MODEL).version == "1"
        run_job(small_example, f"{MODEL}_training", instance, {"ml_platform/force_retrain": "true"})
        assert registry.registered_versions(MODEL) == ["1", "2"]
        second = current_evaluation(settings, MODEL)
        assert second.version == "2" and second.champion_version == "1"
        assert second.champion_metrics is not None
        champion = registry.champion_version(MODEL)
        better = second.metrics["roc_auc"] > second.champion_metrics["roc_auc"]
        assert champion == ("2" if better else "1")
        decisions = AuditLog(settings.audit_url).events(MODEL)
        assert [e.action for e in decisions][-1] in ("promoted", "not_promoted")
