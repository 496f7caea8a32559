"""MLflow tracking and model registry: runs, model versions, the ``champion`` alias.

Each training is an MLflow run in the experiment named after the model. The run carries the
tags that make the version reproducible: code version (git sha), data snapshot id, Dagster run id
(under ``dagster_run_id``, the tag dagster-mlflow uses, so its tooling finds our runs too).
MLflow is imported inside the functions.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_platform.settings import PlatformSettings

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from ml_platform.training import TrainedModel

CHAMPION_ALIAS = "champion"
TAG_DAGSTER_RUN = "dagster_run_id"
TAG_CODE_VERSION = "ml_platform.code_version"
TAG_SNAPSHOT = "ml_platform.data_snapshot_id"
TAG_PROFILE = "ml_platform.compute_profile"
TAG_FEATURE_REFS = "ml_platform.feature_refs"
SERVING_CODE = Path(__file__).with_name("serving.py")


def code_version() -> str:
    """The git sha of the running code (``+dirty`` when modified), else a declared version."""
    declared = os.environ.get("ML_PLATFORM_CODE_VERSION")
    if declared:
        return declared
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{sha}+dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return f"ml_platform=={version('ml_platform')}"


def client(settings: PlatformSettings) -> MlflowClient:
    """An MLflow client on the platform's backend; also points MLflow's fluent API at it."""
    import mlflow

    # MLflow exports the URIs to the environment, where PlatformSettings reads the user's own
    # configuration: keep the environment as the user set it.
    exported = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in exported}
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return mlflow.MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


def ensure_experiment(settings: PlatformSettings, name: str) -> str:
    """The id of experiment ``name``, created with the platform's artifact root if missing."""
    mlflow_client = client(settings)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow_client.create_experiment(
        name, artifact_location=f"{settings.mlflow_artifact_root.rstrip('/')}/{name}"
    )


def run_url(settings: PlatformSettings, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI (``MLFLOW_UI_URL``, default the ``make mlflow`` port)."""
    base = os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass
class TrainingRun:
    """An active MLflow run for one training."""

    settings: PlatformSettings
    run_id: str
    experiment_id: str

    @property
    def url(self) -> str:
        return run_url(self.settings, self.experiment_id, self.run_id)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics in a single request."""
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key=name, value=float(value), timestamp=now, step=epoch)
            for name, value in metrics.items()
            if name != "epoch" and isinstance(value, (int, float)) and math.isfinite(value)
        ]
        client(self.settings).log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.log_epoch(step, metrics)


@contextmanager
def start_training_run(
    settings: PlatformSettings,
    model_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
) -> Iterator[TrainingRun]:
    """Start an MLflow run in the model's experiment; it ends FAILED if the body raises."""
    from mlflow.entities import Param, RunTag

    mlflow_client = client(settings)
    experiment_id = ensure_experiment(settings, model_name)
    run_name = f"{model_name}-{tags.get(TAG_DAGSTER_RUN, 'local')[:8]}"
    run = mlflow_client.create_run(experiment_id, tags={"mlflow.runName": run_name, **tags})
    run_id = run.info.run_id
    mlflow_client.log_batch(
        run_id,
        params=[Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())],
        tags=[RunTag("mlflow.source.git.commit", tags.get(TAG_CODE_VERSION, ""))],
        synchronous=True,
    )
    try:
        yield TrainingRun(settings=settings, run_id=run_id, experiment_id=experiment_id)
    except BaseException:
        mlflow_client.set_terminated(run_id, status="FAILED")
        raise
    mlflow_client.set_terminated(run_id, status="FINISHED")


def log_model_version(
    training_run: TrainingRun,
    model: TrainedModel,
    model_name: str,
    input_example: pd.DataFrame,
) -> str:
    """Log the model (safetensors + JSON, served by model code) and register a new version.

    Returns:
        The new version number of registered model ``model_name``.
    """
    import mlflow
    import mlflow.pyfunc
    import torch
    from mlflow.models import infer_signature

    settings = training_run.settings
    client(settings)
    example = input_example.head(5).reset_index(drop=True)
    # Integer features may be missing when scored (the model imputes them): declare them as
    # doubles so MLflow's schema enforcement accepts NaN.
    example = example.astype(
        {c: "float64" for c in example.columns if example[c].dtype.kind in "iu"}
    )
    signature = infer_signature(example, model.predict(example))
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "safetensors", "pandas", "numpy"]
    with tempfile.TemporaryDirectory() as directory:
        model_dir = Path(directory) / "model"
        model.save(model_dir)
        with mlflow.start_run(run_id=training_run.run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(SERVING_CODE),
                artifacts={"model": str(model_dir)},
                signature=signature,
                pip_requirements=requirements,
                registered_model_name=model_name,
                await_registration_for=60,
            )
    version = str(info.registered_model_version or "")
    if not version:
        raise RuntimeError(f"MLflow did not register a version of '{model_name}'")
    client(settings).set_model_version_tag(
        model_name, str(version), "mlflow_run_id", training_run.run_id
    )
    return str(version)


def champion_version(settings: PlatformSettings, model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(settings).get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException:
        return None


def set_champion(settings: PlatformSettings, model_name: str, version: str) -> None:
    client(settings).set_registered_model_alias(model_name, CHAMPION_ALIAS, version)


def version_tags(settings: PlatformSettings, model_name: str, version: str) -> dict[str, str]:
    """Tags of a model version and of the run that produced it (run tags first)."""
    mlflow_client = client(settings)
    model_version = mlflow_client.get_model_version(model_name, version)
    run_tags = mlflow_client.get_run(model_version.run_id).data.tags if model_version.run_id else {}
    return {**run_tags, **model_version.tags}


def tag_version(
    settings: PlatformSettings, model_name: str, version: str, tags: dict[str, str]
) -> None:
    mlflow_client = client(settings)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(model_name, version, key, str(value)[:5000])


def load_model(settings: PlatformSettings, model_name: str, version: str) -> TrainedModel:
    """Download a registered version's weights and rebuild it (no pickle is loaded)."""
    import mlflow.artifacts

    from ml_platform.training import TrainedModel

    client(settings)
    with tempfile.TemporaryDirectory() as directory:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_name}/{version}", dst_path=directory
        )
        return TrainedModel.load(Path(local) / "artifacts" / "model")


def registered_versions(settings: PlatformSettings, model_name: str) -> list[str]:
    versions = client(settings).search_model_versions(f"name='{model_name}'")
    return sorted((str(v.version) for v in versions), key=int)
