"""Six processes train, evaluate and promote one model at once: one consistent champion chain.

Each contender is an OS process (multiprocessing ``forkserver``: a fresh single-threaded server
imports the ML libraries once and forks the six from it) with its own Dagster run id, against
one real MLflow registry and one audit database. They train one at a time (as the platform's
training lease of a model makes them) and, once all have evaluated (against the same champion),
promote together: the worst interleaving, made certain rather than left to chance. The alias
must move by compare-and-set under the audit log's lock: every promotion names the champion it
replaced, exactly one names none, the alias is the version of the last promotion, and every
contender that lost says why.

The backend comes from the ``promotion_backend`` fixture: SQLite files here; parametrize it with
a PostgreSQL server's URIs to run the same test there.
"""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path
from typing import Any

import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import build_training_set
from ml_platform.features.store import apply_feature_repo
from ml_platform.registry.client import ModelRegistry
from ml_platform.spec.loading import load_project
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = 6
# What the forkserver imports once before forking the contenders (6 imports of these cost ~30 s).
PRELOAD = [
    __name__,
    "mlflow.pyfunc",
    "xgboost",
    "sklearn.metrics",
    "ml_platform.lifecycle.train",
    "ml_platform.lifecycle.evaluate",
    "ml_platform.lifecycle.promote",
    "ml_platform.training.flavors.xgboost",
]
WAIT = 600  # seconds a contender waits for the others before giving up (a hang guard only)


@pytest.fixture(params=["sqlite", "postgres"])
def promotion_backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The MLflow tracking URI and the audit log URL the contenders share.

    SQLite files, or two fresh databases on the session's PostgreSQL server (tests/postgres.py).
    """
    if request.param == "postgres":
        new_database = request.getfixturevalue("postgres_databases")
        return new_database(), new_database()
    return f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'audit.db'}"


def _spec_dir(root: Path, index: int) -> Path:
    # Each contender trains with other parameters: six distinct versions of different quality.
    model = {"flavor": "xgboost", "params": {"n_estimators": 5 + 3 * index, "max_depth": 3}}
    return loans.write_specs(root / f"specs-{index}", model=model)


def _contender(
    index: int,
    home: str,
    specs: str,
    backend: tuple[str, str],
    run_id: str,
    training: Any,
    evaluated: Any,
    results: Any,
) -> None:
    """Train, evaluate and promote as one Dagster run would; report the outcome or the error."""
    from ml_platform.lifecycle.evaluate import evaluate_model
    from ml_platform.lifecycle.promote import promote
    from ml_platform.lifecycle.records import StepContext
    from ml_platform.lifecycle.train import train_model

    try:
        tracking_uri, audit_url = backend
        catalog = load_project(PROJECT_ROOT, specs)
        spec, resolved = catalog.models[loans.MODEL], catalog.resolved[loans.MODEL]
        settings = PlatformSettings.from_env(
            home=home,
            mlflow_tracking_uri=tracking_uri,
            audit_url=audit_url,
            checkpoint_root=f"{home}/checkpoints-{index}",
        )
        step = StepContext(
            settings=settings,
            registry=ModelRegistry(
                tracking_uri=tracking_uri,
                artifact_root=f"{home}/mlartifacts",
                registry_uri=tracking_uri,
            ),
            audit=AuditLog(audit_url),
            dagster_run_id=run_id,
        )
        with training:
            record = train_model(spec, resolved, step)
        report = evaluate_model(spec, step)
        evaluated.wait(WAIT)
        decision, champion = promote(spec, step)
        results.put(
            {
                "run_id": run_id,
                "trained": record.version,
                "evaluated": report.version,
                "evaluated_against": report.champion_version,
                "promoted": decision.promote,
                "reasons": decision.reasons,
                "champion": champion,
            }
        )
    except BaseException:
        results.put({"run_id": run_id, "error": traceback.format_exc()})
        evaluated.abort()


@pytest.mark.slow
def test_concurrent_promotions_form_one_chain_and_the_alias_is_the_last(
    platform_home: Path, tmp_path: Path, promotion_backend: tuple[str, str]
) -> None:
    tracking_uri, audit_url = promotion_backend
    catalog = load_project(PROJECT_ROOT, str(_spec_dir(tmp_path, 0)))
    spec, resolved = catalog.models[loans.MODEL], catalog.resolved[loans.MODEL]
    settings = PlatformSettings.from_env(mlflow_tracking_uri=tracking_uri, audit_url=audit_url)
    loans.write_frames(settings, loans.good_frames())
    apply_feature_repo(catalog.feature_repos["lending"], settings)
    _, data_report = build_training_set(spec, resolved, catalog, settings)
    assert data_report.success, data_report.summary()
    # The databases' schemas exist before the contenders race (as on a running deployment).
    registry = ModelRegistry(
        tracking_uri=tracking_uri,
        artifact_root=str(platform_home / "mlartifacts"),
        registry_uri=tracking_uri,
    )
    assert registry.registered_versions(loans.MODEL) == []
    audit = AuditLog(audit_url)

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    training, evaluated = context.Lock(), context.Barrier(CONTENDERS)
    results = context.Queue()
    run_ids = [f"{index:08d}-race-4000-8000-000000000000" for index in range(CONTENDERS)]
    processes = [
        context.Process(
            target=_contender,
            args=(
                index,
                str(platform_home),
                str(_spec_dir(tmp_path, index)),
                (tracking_uri, audit_url),
                run_ids[index],
                training,
                evaluated,
                results,
            ),
        )
        for index in range(CONTENDERS)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=WAIT) for _ in processes]
    for process in processes:
        process.join(WAIT)
    errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
    assert not errors, "\n".join(errors)

    # Every run registered its own version, and evaluated and promoted that one.
    trained = {outcome["run_id"]: outcome["trained"] for outcome in outcomes}
    assert len(set(trained.values())) == CONTENDERS
    assert all(outcome["evaluated"] == outcome["trained"] for outcome in outcomes)
    assert sorted(registry.registered_versions(loans.MODEL), key=int) == sorted(
        trained.values(), key=int
    )

    # The promotions form one chain: each replaced the one before, only the first replaced none.
    promoted = audit.events(loans.MODEL, "promoted")
    assert promoted, outcomes
    previous = [event.details["previous_champion"] for event in promoted]
    assert previous == [None, *[event.model_version for event in promoted[:-1]]]
    for event in promoted:
        assert event.model_version == trained[str(event.dagster_run_id)]
    assert registry.champion_version(loans.MODEL) == promoted[-1].model_version

    # Everyone who lost says why; a contender that lost a race names the champion that moved.
    refused = audit.events(loans.MODEL, "not_promoted")
    assert len(promoted) + len(refused) == CONTENDERS
    for event in refused:
        assert event.details["reasons"], event
    for outcome in outcomes:
        if outcome["promoted"]:
            continue
        winner = f"v{promoted[0].model_version}"
        raced = [reason for reason in outcome["reasons"] if "since evaluation" in reason]
        gates = [reason for reason in outcome["reasons"] if reason.startswith("gate ")]
        assert raced or gates, outcome
        for reason in raced:
            assert reason.startswith(f"champion moved from none to {winner}"), reason
            assert reason.endswith("re-run evaluation"), reason
        tags = registry.version_tags(loans.MODEL, outcome["trained"])
        assert tags["ml_platform.promotion"] == "not_promoted"
