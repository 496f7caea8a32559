"""The golden path on PostgreSQL: the Dagster instance, the MLflow backend and the audit log on a
real server (Debian's package, started by ``tests/postgres.py``), configured the way an operator
does it (``dagster.yaml``, ``MLFLOW_TRACKING_URI``, ``ML_PLATFORM_AUDIT_URL``), and nothing of
the three left on SQLite. What is asserted is read back from Postgres with SQLAlchemy directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from assets.keys import FORCE_RETRAIN_TAG
from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import TAG_DAGSTER_RUN
from tests.e2e import loans
from tests.e2e.test_golden_path import run_job
from tests.postgres import PostgresServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = loans.MODEL
# A small gradient-boosted model: the point is the engines, not the trainer.
FAST_MODEL = {"flavor": "xgboost", "params": {"n_estimators": 20}}


@dataclass(frozen=True)
class PostgresBackends:
    """The SQLAlchemy URLs of the three databases, one per engine (their table names clash).

    Each names its driver: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which is
    not installed; psycopg2 is (dagster-postgres depends on it).
    """

    dagster: str
    mlflow: str
    audit: str


def rows(url: str, query: str, **parameters: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(query), parameters)]
    finally:
        engine.dispose()


def write_instance_yaml(dagster_home: Path, url: str) -> None:
    """``dagster.yaml`` with the run, event log and schedule storage on the database at ``url``."""
    config = {"storage": {"postgres": {"postgres_url": url}}, "telemetry": {"enabled": False}}
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def on_postgres(
    platform_home: Path,
    postgres_databases: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> PostgresBackends:
    """The loans model's home: Dagster instance, MLflow backend and audit log on Postgres."""
    backends = PostgresBackends(postgres_databases(), postgres_databases(), postgres_databases())
    write_instance_yaml(platform_home / "dagster", backends.dagster)
    # MLflow's SQLAlchemy store; its artifacts stay on local files under the home.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", backends.mlflow)
    monkeypatch.setenv("ML_PLATFORM_AUDIT_URL", backends.audit)
    loans.write_frames(PlatformSettings.from_env(), loans.good_frames())
    return backends


@pytest.mark.slow
def test_golden_path_on_postgres(
    on_postgres: PostgresBackends, platform_home: Path, tmp_path: Path
) -> None:
    specs = loans.write_specs(tmp_path / "specs", model=FAST_MODEL)
    defs = build_definitions(PROJECT_ROOT, spec_path=str(specs))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        training = run_job(defs, f"{MODEL}_training", instance)
        scoring = run_job(defs, f"{MODEL}_scoring", instance)
        # Unchanged inputs would reuse version 1: the force tag trains a second version.
        retraining = run_job(defs, f"{MODEL}_training", instance, tags={FORCE_RETRAIN_TAG: "true"})
        model = instance.get_latest_materialization_event(dg.AssetKey([MODEL, "model"]))
        assert model is not None and model.run_id == retraining.run_id

    # Dagster's run storage: the three runs succeeded.
    runs = rows(on_postgres.dagster, "SELECT run_id, pipeline_name, status FROM runs")
    assert sorted(runs) == sorted(
        [
            (training.run_id, f"{MODEL}_training", "SUCCESS"),
            (scoring.run_id, f"{MODEL}_scoring", "SUCCESS"),
            (retraining.run_id, f"{MODEL}_training", "SUCCESS"),
        ]
    )

    # MLflow's registry: one version per training, tagged with its Dagster run; a champion.
    mlflow = on_postgres.mlflow
    versions = rows(mlflow, "SELECT version FROM model_versions WHERE name = :m", m=MODEL)
    assert sorted(versions) == [(1,), (2,)]
    trained_by = rows(
        mlflow,
        "SELECT version, value FROM model_version_tags WHERE name = :m AND key = :k",
        m=MODEL,
        k=TAG_DAGSTER_RUN,
    )
    assert sorted(trained_by) == [(1, training.run_id), (2, retraining.run_id)]
    aliases = rows(
        mlflow, "SELECT alias, version FROM registered_model_aliases WHERE name = :m", m=MODEL
    )
    assert len(aliases) == 1 and aliases[0][0] == "champion"
    champion = str(aliases[0][1])
    assert ModelRegistry.for_settings(PlatformSettings.from_env()).champion_version(MODEL) == (
        champion
    )

    # The audit log: trained, promoted, scored with the champion, then the retraining's decision;
    # the last promotion names the version the alias points at.
    events = rows(
        on_postgres.audit,
        "SELECT action, model_version, dagster_run_id FROM audit_events"
        " WHERE model = :m ORDER BY id",
        m=MODEL,
    )
    assert ("trained", "1", training.run_id) in events
    assert ("promoted", "1", training.run_id) in events
    assert ("scored", "1", scoring.run_id) in events
    assert ("trained", "2", retraining.run_id) in events
    decision = [e for e in events if e[2] == retraining.run_id and e[0] != "trained"]
    assert [action for action, _, _ in decision][-1] in ("promoted", "not_promoted")
    assert [version for action, version, _ in events if action == "promoted"][-1] == champion

    # Nothing of the three engines fell back to SQLite under the home.
    assert not (platform_home / "mlflow.db").exists()
    assert not (platform_home / "audit.db").exists()
    assert not [path for path in (platform_home / "dagster").rglob("*.db")]


def chart_instance_yaml(values: dict[str, Any], server: PostgresServer, database: str) -> str:
    """The storages of ``dagster.yaml`` as the Dagster chart (1.13) renders them from ``values``
    (``templates/helpers/instance/_postgresql.tpl``), with only the server's address, user and
    database changed to the test server's."""
    postgresql = values["postgresql"]
    postgres_db: dict[str, Any] = {
        "username": server.user,
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": server.host,
        "db_name": database,
        "port": server.port,
        "params": postgresql.get("postgresqlParams", {}),
    }
    if postgresql.get("postgresqlScheme"):
        postgres_db["scheme"] = postgresql["postgresqlScheme"]
    storages = {
        "schedule_storage": ("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
        "run_storage": ("dagster_postgres.run_storage", "PostgresRunStorage"),
        "event_log_storage": ("dagster_postgres.event_log", "PostgresEventLogStorage"),
    }
    instance: dict[str, Any] = {
        key: {"module": module, "class": name, "config": {"postgres_db": dict(postgres_db)}}
        for key, (module, name) in storages.items()
    }
    return yaml.safe_dump({**instance, "telemetry": {"enabled": False}})


def test_the_helm_instance_config_opens_on_postgres_with_the_image_drivers(
    postgres_server: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run pods' Dagster instance (deploy/helm/values.yaml through the chart) must open with
    the drivers the image installs: without a scheme, the chart's URL is a bare ``postgresql://``,
    which SQLAlchemy 2.1 gives to psycopg 3, which requirements.lock does not install."""
    values = yaml.safe_load((PROJECT_ROOT / "deploy" / "helm" / "values.yaml").read_text())
    database = sa.make_url(postgres_url).database
    assert database is not None
    (tmp_path / "dagster.yaml").write_text(chart_instance_yaml(values, postgres_server, database))
    # Trust authentication ignores the password; the chart always reads it from this variable.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_runs() == []
        assert instance.all_instigator_state() == []
        assert instance.event_log_storage.supports_global_concurrency_limits
    tables = rows(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert {("runs",), ("event_logs",), ("instigators",)} <= set(tables)
