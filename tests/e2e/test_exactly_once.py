"""Registration and promotion under MLflow faults: never twice, never on an unknown champion.

Faults are real: a tracking server that is not listening, a registry database that errs, and
MLflow's own client failing once after a version was registered (the step then retries with the
same Dagster run, as its retry policy does). Nothing of the platform is mocked.
"""

from __future__ import annotations

import socket
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import build_training_set
from ml_platform.features.store import apply_feature_repo
from ml_platform.lifecycle.evaluate import evaluate_model
from ml_platform.lifecycle.promote import promote
from ml_platform.lifecycle.records import (
    StepContext,
    current_evaluation,
    current_model,
    model_root,
)
from ml_platform.lifecycle.reference import load_reference
from ml_platform.lifecycle.train import train_model
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.mlflow_env import RegistryUnavailableError
from ml_platform.registry.tags import TAG_DAGSTER_RUN, TAG_MLFLOW_RUN_ID, TAG_TRAINING_KEY
from ml_platform.spec.catalog import ResolvedFeatures
from ml_platform.spec.loading import load_project
from ml_platform.spec.model import ModelSpec
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAST_MODEL = {"flavor": "xgboost", "params": {"n_estimators": 20}}
SECRET = "s3cr3t-canary"
DAGSTER_RUN = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"


@dataclass(frozen=True)
class Loans:
    spec: ModelSpec
    resolved: ResolvedFeatures
    step: StepContext


@pytest.fixture
def loans_ready(platform_home: Path, tmp_path: Path) -> Loans:
    """The loans model with a current training set, and a step context on the real engines."""
    specs = loans.write_specs(tmp_path / "specs", model=FAST_MODEL)
    catalog = load_project(PROJECT_ROOT, str(specs))
    spec, resolved = catalog.models[loans.MODEL], catalog.resolved[loans.MODEL]
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    apply_feature_repo(catalog.feature_repos["lending"], settings)
    _, report = build_training_set(spec, resolved, catalog, settings)
    assert report.success, report.summary()
    step = StepContext(
        settings=settings,
        registry=ModelRegistry.for_settings(settings),
        audit=AuditLog(settings.audit_url),
        dagster_run_id=DAGSTER_RUN,
    )
    return Loans(spec, resolved, step)


@pytest.fixture
def unreachable_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A registry whose tracking server is down: nothing listens on its port."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://operator:{SECRET}@127.0.0.1:{port}"
    return ModelRegistry(tracking_uri=uri, artifact_root=str(tmp_path / "artifacts"))


def _local_registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
    )


def _break_alias_table(registry: ModelRegistry) -> None:
    """Make the registry database err on any alias query (a real backend failure)."""
    path = registry.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE registered_model_aliases")


def test_a_missing_model_or_alias_means_no_champion(tmp_path: Path) -> None:
    registry = _local_registry(tmp_path)

    assert registry.champion_version("never_registered") is None
    registry.client.create_registered_model("toy")
    assert registry.champion_version("toy") is None
    registry.client.create_model_version("toy", source=str(tmp_path), run_id=None)
    assert registry.champion_version("toy") is None
    registry.set_champion("toy", "1")
    assert registry.champion_version("toy") == "1"


def test_an_unreachable_tracking_server_is_an_error_not_no_champion(
    unreachable_registry: ModelRegistry,
) -> None:
    with pytest.raises(RegistryUnavailableError) as raised:
        unreachable_registry.champion_version(loans.MODEL)

    message = str(raised.value)
    assert f"model '{loans.MODEL}'" in message
    assert unreachable_registry.tracking_uri.replace(f"operator:{SECRET}@", "") in message
    assert SECRET not in message


def test_a_failing_registry_database_is_an_error_not_no_champion(tmp_path: Path) -> None:
    registry = _local_registry(tmp_path)
    registry.client.create_registered_model("toy")
    _break_alias_table(registry)

    with pytest.raises(RegistryUnavailableError, match="TEMPORARILY_UNAVAILABLE") as raised:
        registry.champion_version("toy")

    assert "model 'toy'" in str(raised.value)
    assert "mlflow.db" in str(raised.value)


@pytest.mark.slow
def test_an_mlflow_outage_fails_evaluation_and_promotion_and_moves_nothing(
    loans_ready: Loans, unreachable_registry: ModelRegistry
) -> None:
    spec, step = loans_ready.spec, loans_ready.step
    record = train_model(spec, loans_ready.resolved, step)
    evaluated = evaluate_model(spec, step)

    with pytest.raises(MlflowException):
        promote(spec, replace(step, registry=unreachable_registry))

    assert step.audit.events(spec.name, "promoted") == []
    assert step.audit.events(spec.name, "not_promoted") == []
    assert step.registry.champion_version(spec.name) is None

    # The broken database fails every read of the registered model, the champion's included.
    _break_alias_table(step.registry)
    with pytest.raises((MlflowException, RegistryUnavailableError)):
        evaluate_model(spec, step)
    # Promotion reads the alias under the champion lock: it fails closed and records nothing.
    with pytest.raises(RegistryUnavailableError):
        promote(spec, step)

    assert current_evaluation(step.settings, spec.name) == evaluated
    assert [e.action for e in step.audit.events(spec.name)] == ["trained"]
    assert record.version == "1"


def _fail_once_after_registration(
    monkeypatch: pytest.MonkeyPatch, method: str, registry: ModelRegistry, model: str
) -> list[str]:
    """Make MLflow's client fail the first ``method`` call made once a version is registered."""
    original = getattr(MlflowClient, method)
    failures: list[str] = []

    def fail_once(self: MlflowClient, *args: object, **kwargs: object) -> object:
        if not failures and registry.registered_versions(model):
            failures.append(method)
            raise MlflowException(f"injected fault in {method}", TEMPORARILY_UNAVAILABLE)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, fail_once)
    return failures


@pytest.mark.slow
@pytest.mark.parametrize("method", ["log_dict", "log_artifact", "set_terminated"])
def test_a_retry_after_registration_reuses_the_version(
    loans_ready: Loans, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    spec, resolved, step = loans_ready.spec, loans_ready.resolved, loans_ready.step
    failures = _fail_once_after_registration(monkeypatch, method, step.registry, spec.name)

    with pytest.raises(MlflowException, match="injected fault"):
        train_model(spec, resolved, step)
    assert failures == [method]
    assert step.registry.registered_versions(spec.name) == ["1"]

    record = train_model(spec, resolved, step)

    assert step.registry.registered_versions(spec.name) == ["1"]
    assert record.version == "1"
    assert current_model(step.settings, spec.name) == record
    tags = step.registry.version_tags(spec.name, "1")
    assert tags[TAG_DAGSTER_RUN] == DAGSTER_RUN
    assert tags[TAG_MLFLOW_RUN_ID] == record.mlflow_run_id
    assert len(tags[TAG_TRAINING_KEY]) == 16
    run = step.registry.client.get_run(record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    trained = step.audit.events(spec.name, "trained")
    assert [(e.model_version, e.dagster_run_id) for e in trained] == [("1", DAGSTER_RUN)]
    assert load_reference(step.settings, step.registry, spec.name, "1").sample.shape[0] > 0
    checkpoints = Path(step.settings.checkpoint_root) / spec.name
    assert not checkpoints.exists() or not any(checkpoints.iterdir())
    assert Path(model_root(step.settings, spec.name, "model")).exists()
