"""A model of the XGBoost flavor goes through the whole graph exactly like a PyTorch one.

Training set, model, evaluation gates, champion and predictions run on real Feast, MLflow and
Great Expectations; the registered artifact is XGBoost's own UBJ format and loads back with
pickle disabled.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.lifecycle.records import current_evaluation
from ml_platform.registry.client import ModelRegistry
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
XGBOOST_MODEL = {
    "flavor": "xgboost",
    "params": {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.2},
}


def _forbid_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model artifact was unpickled")

    for module in (pickle, pytest.importorskip("cloudpickle")):
        monkeypatch.setattr(module, "load", refuse)
        monkeypatch.setattr(module, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def _pickled_files(directory: Path) -> list[str]:
    """Files that are pickles: by name, or by the pickle protocol header (0x80, protocol 2-5)."""
    found = []
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        head = path.read_bytes()[:2]
        pickle_header = head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"
        if path.suffix in (".pkl", ".pickle") or pickle_header:
            found.append(str(path.relative_to(directory)))
    return found


@pytest.mark.slow
def test_xgboost_model_through_the_whole_graph(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_dir = loans.write_specs(tmp_path / "specs", model=XGBOOST_MODEL)
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    defs = build_definitions(PROJECT_ROOT, spec_path=str(spec_dir))

    with dg.DagsterInstance.ephemeral() as instance:
        for job in (f"{loans.MODEL}_training", f"{loans.MODEL}_scoring"):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance).success
        # A second (forced: the inputs are unchanged) training is a challenger, compared with
        # the champion on the same test rows.
        result = defs.resolve_job_def(f"{loans.MODEL}_training").execute_in_process(
            instance=instance, tags={"ml_platform/force_retrain": "true"}
        )
        assert result.success
        checks = {
            evaluation.check_name: evaluation.passed
            for evaluation in result.get_asset_check_evaluations()
        }

    registry = ModelRegistry.for_settings(settings)
    assert registry.registered_versions(loans.MODEL) == ["1", "2"]
    assert registry.champion_version(loans.MODEL) in ("1", "2")
    assert checks["data_quality"] and checks["metrics_meet_thresholds"]
    assert "no_regression_vs_champion" in checks

    report = current_evaluation(settings, loans.MODEL)
    assert report.version == "2" and report.champion_version == "1"
    assert report.champion_metrics is not None
    assert report.metrics["roc_auc"] > 0.7, report.metrics
    assert set(report.slices["region"]) == {"north", "south", "east"}
    tags = registry.version_tags(loans.MODEL, "1")
    assert tags.get("ml_platform.promotion") == "promoted", tags

    predictions = pd.read_parquet(
        next(Path(settings.data_path("models", loans.MODEL, "predictions")).glob("*.parquet"))
    )
    assert len(predictions) > 0
    assert predictions["score"].between(0, 1).all()
    assert set(predictions["model_version"]) == {"1"}
    actions = [event.action for event in AuditLog(settings.audit_url).events(loans.MODEL)]
    assert actions.count("trained") == 2 and "scored" in actions

    # The artifact: XGBoost's UBJ and JSON only, loaded back with every unpickler disabled.
    artifacts = Path(settings.mlflow_artifact_root.removeprefix("file://"))
    model_dirs = [p.parent for p in artifacts.rglob("model.ubj")]
    assert model_dirs, f"no UBJ booster under {artifacts}"
    for directory in model_dirs:
        assert _pickled_files(directory) == []
    _forbid_pickle(monkeypatch)
    model = registry.load_model(loans.MODEL, "1")
    assert model.flavor == "xgboost"
    rows = loans.good_frames(rows=50, seed=3)["loan_outcomes"]
    rows = rows.assign(credit_score=620.0, debt_ratio=0.3)
    probability = model.predict(rows)
    assert probability.shape == (50,) and ((probability >= 0) & (probability <= 1)).all()
