"""The prediction service end to end: the real ``ml-platform serve`` over localhost.

The fraud example is trained once (a champion and a second version whose gates pass) in its own
home; the service runs as a subprocess on a free port against it, with two API keys. The tests
run in order on that one service: clear 4xx answers for unknown and malformed calls (the process
lives on); the features a call used equal the offline point-in-time join for the same entity;
a version whose gates did not pass is never served; a canary at 20% answers about a fifth of
500+ entities, each always by the same version; the service follows a moved champion without a
restart but never an alias moved outside the platform; every call is in the trail with its
caller and no key is anywhere; SIGTERM finishes and flushes everything.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml_platform.features.retrieval import historical_features
from ml_platform.lifecycle.deploy import rollback_canary, start_canary
from ml_platform.lifecycle.promote import override_promotion
from ml_platform.lifecycle.records import TAG_EVALUATION
from ml_platform.serving.calls import entity_key, query_calls
from ml_platform.serving.routing import route
from tests.e2e.serving_world import (
    MODEL,
    Service,
    World,
    build_world,
    distinct_entities,
    instance,
    new_keys,
    start_service,
    wait_ready,
    world_environment,
)

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}/predict"
BATCH = f"/v1/models/{MODEL}/predict/batch"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Service]]:
    """The trained example and its running service (started while the second version trains)."""
    root = tmp_path_factory.mktemp("serving")
    keys = new_keys()
    started: list[Service] = []
    with world_environment(root):
        world = build_world(root, lambda w: started.append(start_service(w.home, keys)))
        service = started[0]
        try:
            body = wait_ready(service)
            assert body["champion"] == world.champion
            yield world, service
        finally:
            if service.alive():
                service.process.kill()
                service.process.wait(30)


def spec(world: World) -> Any:
    return world.catalog.models[MODEL]


def test_answers_known_entities_and_refuses_bad_calls_clearly(
    served: tuple[World, Service],
) -> None:
    world, service = served
    call = instance(world.payments().iloc[-1])

    answer = service.predict(call["entity"], call["features"])
    assert answer["model"] == MODEL
    assert answer["model_version"] == world.champion and answer["role"] == "champion"
    assert 0.0 <= answer["prediction"] <= 1.0
    assert len(answer["request_id"]) == 32

    unknown = service.post(PREDICT, {**call, "entity": {**call["entity"], "customer_id": 10**9}})
    assert unknown.status_code == 404
    assert "customer_id=1000000000" in unknown.json()["detail"]
    assert "customer_profile" in unknown.json()["detail"]

    wrong_type = service.post(PREDICT, {**call, "entity": {**call["entity"], "merchant_id": "x"}})
    assert wrong_type.status_code == 422
    assert ["body", "entity", "merchant_id"] in [e["loc"] for e in wrong_type.json()["detail"]]
    features = {k: v for k, v in call["features"].items() if k != "amount"}
    missing = service.post(PREDICT, {**call, "features": features})
    assert missing.status_code == 422
    assert ["body", "features", "amount"] in [e["loc"] for e in missing.json()["detail"]]
    extra = service.post(PREDICT, {**call, "entity": {**call["entity"], "card": 1}})
    assert extra.status_code == 422 and "card" in extra.text
    assert service.post(PREDICT, content=b"{not json").status_code == 422
    assert service.post(BATCH, {"instances": []}).status_code == 422

    assert service.post(PREDICT, call, caller=None).status_code == 401
    wrong_key = service.post(PREDICT, call, caller=None, headers={"X-API-Key": "x" * 32})
    assert wrong_key.status_code == 401
    assert wrong_key.headers["WWW-Authenticate"] == "Bearer"
    other = service.post("/v1/models/churn/predict", call, model="churn")
    assert other.status_code == 404 and "unknown model 'churn'" in other.json()["detail"]

    # A batch is answered whole: an unknown entity among the instances is a 404 naming it.
    other_call = instance(world.payments().iloc[-2])
    assert len(service.batch([call, other_call])) == 2
    bad_batch = service.post(
        BATCH, {"instances": [call, {**call, "entity": {**call["entity"], "merchant_id": -5}}]}
    )
    assert bad_batch.status_code == 404
    assert "instances[1]" in bad_batch.json()["detail"]
    assert len(bad_batch.json()["request_ids"]) == 2  # each instance is a call in the trail

    assert service.alive()
    assert service.get("/healthz").status_code == 200
    schema = service.get("/openapi.json").json()
    request = schema["components"]["schemas"]["FraudDetectionRequest"]
    assert set(request["properties"]) == {"entity", "features", "ids"}
    entity = schema["components"]["schemas"]["FraudDetectionEntity"]
    assert entity["properties"]["customer_id"]["type"] == "integer"
    assert set(entity["required"]) == {"customer_id", "merchant_id"}
    features_schema = schema["components"]["schemas"]["FraudDetectionRequestFeatures"]
    assert features_schema["properties"]["amount"]["type"] == "number"
    assert features_schema["properties"]["channel"]["type"] == "string"
    prediction = schema["components"]["schemas"]["FraudDetectionPrediction"]
    assert prediction["properties"]["prediction"]["maximum"] == 1.0


def _same(served_value: Any, offline_value: Any) -> bool:
    missing = [
        v is None or (isinstance(v, float) and math.isnan(v)) for v in (served_value, offline_value)
    ]
    if any(missing):
        return all(missing)
    if isinstance(served_value, str) or isinstance(offline_value, str):
        return served_value == offline_value
    return math.isclose(float(served_value), float(offline_value), rel_tol=1e-9, abs_tol=1e-9)


def test_features_used_equal_the_offline_point_in_time_join(
    served: tuple[World, Service],
) -> None:
    world, service = served
    resolved = world.catalog.resolved[MODEL]
    calls = distinct_entities(world.payments(), 40)
    answers = service.batch(calls)

    # After the newest feature row, the point-in-time join gives what the online store holds.
    sources = world.catalog.sources()
    views = world.catalog.feature_views()
    newest = max(
        pd.to_datetime(
            pd.read_parquet(
                world.settings.data_path(sources[views[v][1].source][1].path),
                columns=["event_timestamp"],
            )["event_timestamp"],
            utc=True,
        ).max()
        for v in resolved.feature_views
    )
    at = newest + timedelta(seconds=1)
    rows = pd.DataFrame([{**c["entity"], **c["features"], "event_timestamp": at} for c in calls])
    offline = historical_features(world.settings, rows, resolved.feature_refs, "event_timestamp")

    model = world.registry.load_model(MODEL, world.champion)
    expected = model.predict(offline)
    service_calls = calls_in_trail(world.settings.audit_url, [a["request_id"] for a in answers])
    nulls = 0
    for n, answer in enumerate(answers):
        record = service_calls.get(answer["request_id"])
        assert record is not None, "the call is not in the trail"
        assert record.entity == calls[n]["entity"]
        assert set(record.features) == set(resolved.model_inputs)
        assert set(record.feature_views) == set(resolved.feature_views)
        for name in resolved.model_inputs:
            assert _same(record.features[name], offline.loc[n, name]), (
                n,
                name,
                record.features[name],
                offline.loc[n, name],
            )
        nulls += sum(record.features[name] is None for name in resolved.model_inputs)
        assert math.isclose(answer["prediction"], float(expected[n]), abs_tol=1e-5)
        assert record.identifiers == calls[n]["ids"]
    assert nulls < len(answers) * len(resolved.model_inputs) / 2  # real values were compared


def test_never_serves_a_version_whose_gates_did_not_pass(served: tuple[World, Service]) -> None:
    world, service = served
    registry = world.registry
    registry.tag_version(MODEL, world.challenger, {TAG_EVALUATION: "failed"})
    try:
        # Set outside the platform (the deployment job refuses an ungated version).
        registry.set_canary(MODEL, world.challenger, 1.0, datetime.now(UTC))
        body = service.wait_for(
            lambda b: any(f"v{world.challenger} refused" in r for r in b["reasons"]),
            "the ungated canary refused",
        )
        assert body["canary"] is None and body["champion"] == world.champion
        calls = distinct_entities(world.payments(), 30)
        assert {a["model_version"] for a in service.batch(calls)} == {world.champion}
        metrics = service.get("/metrics").text
        labels = f'model="{MODEL}",reason="gates",version="{world.challenger}"'
        assert f"ml_platform_serving_refused_version{{{labels}}} 1.0" in metrics
    finally:
        registry.clear_canary(MODEL)
        registry.tag_version(MODEL, world.challenger, {TAG_EVALUATION: "passed"})
    service.wait_for(lambda b: not b["reasons"], "the refusal cleared")


def test_a_canary_at_20_percent_serves_a_sticky_fifth_of_the_entities(
    served: tuple[World, Service],
) -> None:
    world, service = served
    start_canary(spec(world), world.step, version=world.challenger, share=0.2)
    service.wait_for(lambda b: b["canary"] == world.challenger, "the canary")
    calls = distinct_entities(world.payments(), 600)
    answers = [a for i in range(0, len(calls), 100) for a in service.batch(calls[i : i + 100])]
    by_canary = [a["role"] == "canary" for a in answers]
    assert 0.14 <= sum(by_canary) / len(answers) <= 0.26, sum(by_canary)
    for call, answer in zip(calls, answers, strict=True):
        expected = route(MODEL, entity_key(call["entity"]), 0.2)
        assert answer["role"] == expected
        version = world.challenger if expected == "canary" else world.champion
        assert answer["model_version"] == version
    # Sticky: the same entities, one call each, meet the same versions again.
    for call, answer in list(zip(calls, answers, strict=True))[:60]:
        again = service.predict(call["entity"], call["features"], caller="backoffice")
        assert (again["model_version"], again["role"]) == (answer["model_version"], answer["role"])
    metrics = service.get("/metrics").text
    labels = f'model="{MODEL}",role="canary",version="{world.challenger}"'
    assert f"ml_platform_serving_traffic_share{{{labels}}} 0.2" in metrics
    rollback_canary(spec(world), world.step, ["the e2e test ends the canary"])
    service.wait_for(lambda b: b["canary"] is None, "the canary's end")


def test_follows_the_champion_alias_without_a_restart(served: tuple[World, Service]) -> None:
    world, service = served
    call = instance(world.payments().iloc[-3])
    first, second = world.champion, world.challenger
    override_promotion(
        spec(world),
        second,
        "e2e: the service must follow a moved champion",
        "serving-e2e",
        registry=world.registry,
        audit=world.audit,
    )
    service.wait_for(lambda b: b["champion"] == second, "the new champion", timeout=60)
    assert service.predict(call["entity"], call["features"])["model_version"] == second

    # Moved outside the platform (no audit entry): refused, the service keeps the explained one.
    world.registry.set_champion(MODEL, first)
    body = service.wait_for(
        lambda b: any("unexplained" in r or "outside the platform" in r for r in b["reasons"]),
        "the unexplained alias refused",
    )
    assert body["champion"] == second
    assert service.predict(call["entity"], call["features"])["model_version"] == second

    override_promotion(
        spec(world),
        first,
        "e2e: back to the first champion, explained",
        "serving-e2e",
        registry=world.registry,
        audit=world.audit,
    )
    service.wait_for(lambda b: b["champion"] == first and not b["reasons"], "the first again")
    assert service.predict(call["entity"], call["features"])["model_version"] == first
    assert service.alive()


def calls_in_trail(url: str, request_ids: list[str]) -> dict[str, Any]:
    """The trail's calls by request id, once ``request_ids`` are all there (a bounded wait).

    The service answers once a call is journaled; the trail's writer moves it to the database
    within its flush interval (0.2 s), later on a busy machine.
    """
    found: dict[str, Any] = {}
    for _ in range(100):
        found = {c.request_id: c for c in query_calls(url, MODEL, limit=100_000)}
        if all(r in found for r in request_ids):
            break
        time.sleep(0.2)
    return found


def test_every_call_is_in_the_trail_with_its_caller_and_no_key_anywhere(
    served: tuple[World, Service],
) -> None:
    world, service = served
    url = world.settings.audit_url
    metrics = service.get("/metrics").text
    found: dict[str, Any] = {}
    for _ in range(100):  # the trail flushes every 0.2 s: a bounded wait
        found = {
            c.request_id: c for m in (MODEL, "churn") for c in query_calls(url, m, limit=10**5)
        }
        if all(c.request_id in found for c in service.ledger):
            break
        time.sleep(0.2)
    missing = [c for c in service.ledger if c.request_id not in found]
    assert not missing, missing[:5]
    for call in service.ledger:
        record = found[call.request_id]
        assert (record.caller, record.status_code) == (call.caller, call.status), call
    callers = {found[c.request_id].caller for c in service.ledger}
    assert callers == {"checkout", "backoffice", "unauthenticated"}
    assert query_calls(url, MODEL, caller="backoffice", limit=1000)
    database = Path(url.removeprefix("sqlite:///")).read_bytes().decode("latin-1")
    texts = [metrics, service.log.read_text(), database, *(repr(r) for r in found.values())]
    for key in service.keys.values():
        assert not any(key in text for text in texts)


def test_sigterm_finishes_calls_in_flight_and_flushes_the_trail(
    served: tuple[World, Service],
) -> None:
    world, service = served
    calls = distinct_entities(world.payments(), 40)
    answered: list[str] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for call in calls:
                response = service.post(PREDICT, call)
                if response.status_code == 200:
                    answered.append(response.json()["request_id"])
        except Exception as error:  # the connection is refused once it stopped accepting
            errors.append(error)

    sender = threading.Thread(target=load)
    sender.start()
    while len(answered) < 10 and sender.is_alive():
        time.sleep(0.05)
    assert service.stop() == 0
    sender.join(60)
    assert answered
    # Closed gracefully: every answered call is in the audit database, nothing is left behind.
    trail = {c.request_id for c in query_calls(world.settings.audit_url, MODEL, limit=100_000)}
    assert set(answered) <= trail
    journal = world.home / "serving" / "journal" / MODEL
    leftover = [p for p in journal.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert not leftover, leftover
