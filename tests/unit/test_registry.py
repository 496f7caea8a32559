"""ModelRegistry against a real SQLite MLflow backend: runs, versions, tags, alias, loading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.mlflow_env import mlflow_uris, pip_requirements
from ml_platform.registry.tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_RUN_NAME,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN,
    TAG_MLFLOW_RUN_ID,
    gate_tag,
)

INPUTS = ["amount", "count", "region"]


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A registry on a fresh SQLite backend; the working directory catches stray MLflow files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    (tmp_path / "backend").mkdir()
    return ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'backend' / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
    )


def small_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=300),
            "count": rng.integers(0, 5, 300),
            "region": rng.choice(["north", "south"], 300),
        }
    )
    frame["label"] = (frame["amount"] > 0).astype(int)
    return frame


def test_a_version_round_trips_through_the_registry(registry: ModelRegistry) -> None:
    import mlflow.pyfunc

    from ml_platform.training.config import TrainingConfig
    from ml_platform.training.flavors.registry import get_flavor
    from ml_platform.training.schema import FeatureSchema

    frame = small_frame()
    schema = FeatureSchema(
        numeric=("amount", "count"),
        categorical=("region",),
        label="label",
        task="binary_classification",
    )
    config = TrainingConfig(epochs=2, batch_size=64, device="cpu")
    fitted = get_flavor("torch").fit(frame[:200], frame[200:], schema, {}, config).model
    tags = {TAG_DAGSTER_RUN: "0123456789ab", TAG_CODE_VERSION: "abc123"}

    with registry.start_training_run("toy", {"lr": 0.1}, tags) as run:
        run.log_epoch(1, {"epoch": 1, "loss": 0.5, "diverged": float("nan")})
        version = registry.log_model_version(run, fitted, "toy", frame[INPUTS])

    assert version == "1"
    assert registry.registered_versions("toy") == ["1"]
    logged = registry.client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"lr": "0.1"}
    assert logged.data.metrics == {"loss": 0.5}
    assert logged.data.tags[MLFLOW_RUN_NAME] == "toy-01234567"
    assert logged.data.tags[MLFLOW_GIT_COMMIT] == "abc123"
    assert run.url.endswith(f"/#/experiments/{run.experiment_id}/runs/{run.run_id}")

    registry.log_evaluation(run.run_id, {"roc_auc": 0.9, "undefined": float("nan")}, {"v": "1"})
    evaluated = registry.client.get_run(run.run_id)
    assert evaluated.data.metrics["test_roc_auc"] == 0.9
    assert "test_undefined" not in evaluated.data.metrics
    assert mlflow.artifacts.load_dict(f"{evaluated.info.artifact_uri}/evaluation/report.json") == {
        "v": "1"
    }

    assert registry.champion_version("toy") is None
    registry.set_champion("toy", version)
    assert registry.champion_version("toy") == "1"
    registry.tag_version("toy", version, {gate_tag("min_roc_auc"): "passed"})
    version_tags = registry.version_tags("toy", version)
    assert version_tags["ml_platform.gate.min_roc_auc"] == "passed"
    assert version_tags[TAG_MLFLOW_RUN_ID] == run.run_id
    assert version_tags[TAG_DAGSTER_RUN] == "0123456789ab"  # the run's tags come along

    rows = frame[INPUTS].head(20)
    loaded = registry.load_model("toy", version)
    assert loaded.flavor == "torch"
    np.testing.assert_allclose(loaded.predict(rows), fitted.predict(rows), rtol=1e-6)
    with registry.fluent():
        served = mlflow.pyfunc.load_model(f"models:/toy/{version}")
    scored = served.predict(rows.astype({"count": "float64"}))
    np.testing.assert_allclose(scored["prediction"], fitted.predict(rows), rtol=1e-6)

    assert sorted(p.name for p in Path.cwd().iterdir()) == ["artifacts", "backend"]


def test_a_failing_training_run_ends_failed_and_registers_nothing(
    registry: ModelRegistry,
) -> None:
    with pytest.raises(KeyError), registry.start_training_run("toy", {}, {}) as run:
        raise KeyError("interrupted")
    assert registry.client.get_run(run.run_id).info.status == "FAILED"
    assert registry.registered_versions("toy") == []
    assert registry.champion_version("toy") is None


def test_mlflow_uris_restores_mlflow_and_the_environment_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///the-users-own.db")
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)

    with mlflow_uris("sqlite:///tracking.db", "sqlite:///registry.db"):
        assert mlflow.get_tracking_uri() == "sqlite:///tracking.db"
        assert mlflow.get_registry_uri() == "sqlite:///registry.db"
    assert tracking_utils._tracking_uri is None
    assert registry_utils._registry_uri is None
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert os.environ["MLFLOW_REGISTRY_URI"] == "sqlite:///the-users-own.db"

    monkeypatch.setattr(tracking_utils, "_tracking_uri", "sqlite:///previous.db")
    with pytest.raises(RuntimeError), mlflow_uris("sqlite:///other.db", "sqlite:///other.db"):
        raise RuntimeError("the block failed")
    assert mlflow.get_tracking_uri() == "sqlite:///previous.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_pip_requirements_follow_the_flavor() -> None:
    torch_requirements = pip_requirements("torch")
    assert torch_requirements[0].startswith("torch==")
    assert "+" not in torch_requirements[0]  # no local version label such as +cu121
    assert torch_requirements[1].startswith("safetensors")
    assert pip_requirements("xgboost")[0].startswith("xgboost")
    with pytest.raises(ValueError, match="unknown model flavor 'sklearn'"):
        pip_requirements("sklearn")
