"""Drift monitoring of the prediction service's calls (``monitoring.source: calls``).

The loans example (XGBoost, fast) is trained once. Calls are recorded through the real write
path (``CallTrail``: journal, then the audit database), with the champion's own predictions on
the features served. ``loan_default/drift_report`` then judges the calls, not batch predictions:
calls with shifted credit scores and debt ratios flag exactly those inputs; calls from the
training distribution do not drift, and their labels, joined through the ``loan_id`` the callers
sent, give a performance verdict. Failed calls are never judged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ml_platform.lifecycle.records import DriftReportRecord, current_drift_report
from ml_platform.registry.client import ModelRegistry
from ml_platform.serving.calls import CallRecord, entity_key, features_hash, query_calls
from ml_platform.serving.journal import CallTrail
from tests.e2e import loans

MODEL = loans.MODEL
DRIFT_REPORT = dg.AssetKey([MODEL, "drift_report"])
INPUTS = ["amount", "credit_score", "debt_ratio"]


@dataclass
class World(loans.TrainedWorld):
    """The trained loans model and the directory of the call trail's journal."""

    journal: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The loans model trained once; its monitoring judges the service's calls."""
    root = tmp_path_factory.mktemp("calls_monitoring")
    with loans.trained_world(
        root,
        model={"flavor": "xgboost", "params": {"n_estimators": 40}},
        monitoring={"source": "calls", "window": "1h", "retrain_on": {"drift_share": 0.5}},
    ) as trained:
        yield World(
            trained.defs, trained.instance, trained.settings, trained.frames, root / "journal"
        )


def served_rows(world: World, count: int, seed: int, shifted: bool) -> pd.DataFrame:
    """Loans of the label source with the features a service would have served for them."""
    outcomes = world.frames["loan_outcomes"].sample(count, random_state=seed)
    bureau = world.frames["bureau_reports"].set_index("applicant_id")
    rows = outcomes[["loan_id", "applicant_id", "amount"]].join(
        bureau[["credit_score", "debt_ratio"]], on="applicant_id"
    )
    if shifted:
        rows = rows.assign(
            credit_score=rows["credit_score"] + 150.0,
            debt_ratio=(rows["debt_ratio"] + 0.6).clip(upper=1.6),
        )
    return rows.reset_index(drop=True)


def record_calls(world: World, rows: pd.DataFrame, first: datetime) -> list[CallRecord]:
    """The champion's answers for ``rows``, recorded as calls one second apart from ``first``.

    Every tenth call is an entity the store did not know (404): recorded, never judged.
    """
    registry = ModelRegistry.for_settings(world.settings)
    version = registry.champion_version(MODEL)
    assert version is not None
    scores = registry.load_model(MODEL, version).predict(pd.DataFrame(rows[INPUTS]))
    calls = []
    for i, row in enumerate(rows.to_dict("records")):
        features = {name: float(row[name]) for name in INPUTS}
        failed = i % 10 == 9
        calls.append(
            CallRecord(
                request_id=uuid.uuid4().hex,
                called_at=first + timedelta(seconds=i),
                model=MODEL,
                model_version=None if failed else version,
                role=None if failed else "champion",
                caller="loan-desk",
                entity_key=entity_key({"applicant_id": int(row["applicant_id"])}),
                status_code=404 if failed else 200,
                latency_ms=3.0,
                identifiers={"loan_id": int(row["loan_id"])},
                request_features={"amount": features["amount"]},
                features={} if failed else features,
                features_hash=None if failed else features_hash(features),
                feature_views={"bureau": "v1"},
                error="applicant_id not in feature view 'bureau'" if failed else None,
                prediction=None if failed else float(scores[i]),
            )
        )
    with CallTrail(world.settings.audit_url, world.journal) as trail:
        for call in calls:
            trail.record(call)
    return calls


def drift_report(
    world: World, config: dict[str, str] | None = None
) -> tuple[DriftReportRecord, dg.ExecuteInProcessResult]:
    job = world.defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=world.instance,
        asset_selection=[DRIFT_REPORT],
        run_config={"ops": {f"{MODEL}__drift_report": {"config": config or {}}}},
    )
    assert result.success
    return current_drift_report(world.settings, MODEL), result


@pytest.mark.slow
def test_shifted_calls_flag_the_shifted_features(world: World) -> None:
    first = datetime.now(UTC) - timedelta(hours=5)
    calls = record_calls(world, served_rows(world, 1000, seed=1, shifted=True), first)
    succeeded = [c for c in calls if c.succeeded]
    config = {
        "start": first.isoformat(),
        "end": (first + timedelta(seconds=len(calls))).isoformat(),
    }
    record, result = drift_report(world, config)

    assert record.status == "drift"
    assert record.rows == len(succeeded) == 900  # the 100 failed calls are not judged
    assert set(record.drifted_features) == {"credit_score", "debt_ratio"}
    assert record.retrain_reasons == ["drift_share"]
    assert record.predictions_path.startswith(f"calls of {MODEL} from ")
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    # The calls judged are the trail's: every one is in the audit query, with its caller.
    stored = query_calls(world.settings.audit_url, MODEL, caller="loan-desk", limit=None)
    assert {c.request_id for c in calls} <= {c.request_id for c in stored}


@pytest.mark.slow
def test_calls_from_the_training_distribution_do_not_drift(world: World) -> None:
    # The newest hour of calls (monitoring.window), no time range given.
    first = datetime.now(UTC) - timedelta(minutes=40)
    calls = record_calls(world, served_rows(world, 1000, seed=2, shifted=False), first)
    record, result = drift_report(world)

    assert record.status == "ok", record.reason
    assert record.rows == sum(c.succeeded for c in calls) == 900
    assert record.drifted_features == [] and not record.prediction_drift
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    # Labels joined through the loan_id each caller sent: the model does as well as evaluated.
    assert record.performance is not None and record.performance.rows == 900
    assert record.performance.drop is not None and record.performance.drop < 0.1


def test_a_model_monitored_on_its_calls_does_not_need_batch_predictions(world: World) -> None:
    from assets.keys import monitoring_job_name

    graph = world.defs.resolve_asset_graph()
    report = dg.AssetKey([MODEL, "drift_report"])
    assert graph.get(report).parent_keys == {dg.AssetKey([MODEL, "deployment"])}
    job = world.defs.resolve_job_def(monitoring_job_name(MODEL))
    assert job.asset_layer.selected_asset_keys == {report}
