"""A champion moved behind the platform's back, on a real MLflow registry and a real audit log.

The alias is moved with ``MlflowClient`` directly, as MLflow's UI does: promotion and scoring
detect it, record it once and alert; scoring refuses it until the override job records it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import build_training_set
from ml_platform.features.store import apply_feature_repo
from ml_platform.lifecycle.champion_audit import (
    UNEXPLAINED_ACTION,
    UnexplainedChampionError,
    check_champion,
    record_unexplained,
)
from ml_platform.lifecycle.evaluate import evaluate_model
from ml_platform.lifecycle.promote import override_promotion, promote
from ml_platform.lifecycle.records import StepContext
from ml_platform.lifecycle.score import score
from ml_platform.lifecycle.train import train_model
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import CHAMPION_ALIAS
from ml_platform.spec.loading import load_project
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = loans.MODEL
RUN = "5a1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
ALERTS: list[Any] = []


def capture_alert(alert: Any) -> None:
    """An ML_PLATFORM_ALERT_HANDLER for tests."""
    ALERTS.append(alert)


def _registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
    )


def test_no_alias_is_fine_and_an_alias_no_event_put_there_is_unexplained(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    audit = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    registry.client.create_registered_model(MODEL)
    for _ in range(2):
        registry.client.create_model_version(MODEL, source=str(tmp_path), run_id=None)

    assert not check_champion(registry, audit, MODEL).unexplained
    MlflowClient(registry.tracking_uri).set_registered_model_alias(MODEL, CHAMPION_ALIAS, "1")
    check = check_champion(registry, audit, MODEL)
    assert check.unexplained and (check.alias_version, check.explained_version) == ("1", None)

    audit.record(MODEL, "promoted", model_version="1")
    assert not check_champion(registry, audit, MODEL).unexplained
    audit.record(MODEL, "not_promoted", model_version="2")  # moves nothing: explains nothing
    MlflowClient(registry.tracking_uri).set_registered_model_alias(MODEL, CHAMPION_ALIAS, "2")
    check = check_champion(registry, audit, MODEL)
    assert (check.unexplained, check.alias_version, check.explained_version) == (True, "2", "1")

    # Once per alias version; again only after the platform moved the alias in between.
    assert record_unexplained(audit, check, dagster_run_id=None, detected_by="sensor")
    assert not record_unexplained(audit, check, dagster_run_id=None, detected_by="sensor")
    audit.record(MODEL, "override_promoted", model_version="1")
    assert record_unexplained(audit, check, dagster_run_id=None, detected_by="sensor")
    assert len(audit.events(MODEL, UNEXPLAINED_ACTION)) == 2


def test_an_exclusive_section_commits_its_events_with_it_or_not_at_all(tmp_path: Path) -> None:
    audit = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")

    with (
        pytest.raises(RuntimeError, match="alias did not move"),
        audit.exclusive("champion:toy") as section,
    ):
        section.record("toy", "promoted", model_version="3")
        assert [e.model_version for e in section.events("toy")] == ["3"]
        raise RuntimeError("alias did not move")
    assert audit.events("toy") == []

    with audit.exclusive("champion:toy") as section:
        section.record("toy", "promoted", model_version="4")
    assert [e.model_version for e in audit.events("toy", "promoted")] == ["4"]


@pytest.mark.slow
def test_a_champion_moved_outside_the_platform_is_refused_until_overridden(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_PLATFORM_ALERT_HANDLER", f"{__name__}:capture_alert")
    monkeypatch.delenv("ML_PLATFORM_ALERT_WEBHOOK", raising=False)
    ALERTS.clear()
    specs = loans.write_specs(
        tmp_path / "specs", model={"flavor": "xgboost", "params": {"n_estimators": 20}}
    )
    catalog = load_project(PROJECT_ROOT, str(specs))
    spec, resolved = catalog.models[MODEL], catalog.resolved[MODEL]
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    apply_feature_repo(catalog.feature_repos["lending"], settings)
    assert build_training_set(spec, resolved, catalog, settings)[1].success
    registry = ModelRegistry.for_settings(settings)
    audit = AuditLog(settings.audit_url)
    step = StepContext(settings=settings, registry=registry, audit=audit, dagster_run_id=RUN)
    train_model(spec, resolved, step)
    evaluate_model(spec, step)
    assert promote(spec, step)[0].promote
    assert score(spec, resolved, catalog, step).model_version == "1"

    # Someone registers a copy of v1 as v2 and makes it champion in MLflow, outside the platform.
    source = registry.client.get_model_version_download_uri(MODEL, "1")
    registry.client.create_model_version(MODEL, source=source)
    MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(
        MODEL, CHAMPION_ALIAS, "2"
    )

    # Promotion detects it, records it, alerts, and decides against the alias's real version.
    evaluate_model(spec, step)
    decision, champion = promote(spec, step)
    assert not decision.promote and champion == "2"
    assert "champion v2" in decision.reasons[0]
    # Scoring refuses it, without recording or alerting it a second time.
    for _ in range(2):
        with pytest.raises(UnexplainedChampionError) as refused:
            score(spec, resolved, catalog, step)
        message = str(refused.value)
        assert "points at v2" in message and "explains v1" in message
        assert f"{MODEL}_promote_override" in message
    [event] = audit.events(MODEL, UNEXPLAINED_ACTION)
    assert event.details == {
        "alias_version": "2",
        "explained_version": "1",
        "detected_by": "promotion",
    }
    assert [alert.details["alias_version"] for alert in ALERTS] == ["2"]
    assert [e.details["details"]["kind"] for e in audit.events(MODEL, "alert")] == [
        UNEXPLAINED_ACTION
    ]
    assert [e.model_version for e in audit.events(MODEL, "scored")] == ["1"]

    # The override records the alias: it is explained again, and scoring uses it.
    previous = override_promotion(
        spec,
        "2",
        "v2 was set by hand during the incident; keeping it",
        "oncall@example.com",
        registry=registry,
        audit=audit,
    )
    assert previous == "2"
    assert score(spec, resolved, catalog, step).model_version == "2"
    assert len(audit.events(MODEL, UNEXPLAINED_ACTION)) == 1
    assert len(ALERTS) == 1
