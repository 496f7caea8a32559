"""The service's app in process on a fresh home: nothing servable yet, every call still audited.

Real components: the MLflow registry (SQLite, no model registered), the Feast registry (empty),
the call trail on the audit database; FastAPI's TestClient runs the app's lifespan.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_platform.core.settings import PlatformSettings
from ml_platform.serving.auth import API_KEYS_ENV
from ml_platform.serving.calls import query_calls
from ml_platform.serving.server import ServeOptions, build_app
from ml_platform.spec.loading import load_project
from tests.unit.serving_examples import CALL, MODEL, PROJECT_ROOT

KEY = "k" * 24


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_without_a_servable_version_calls_are_503_and_every_call_is_audited(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient  # warns on import (it still uses httpx)

    monkeypatch.setenv(API_KEYS_ENV, f"checkout:{KEY}")
    settings = PlatformSettings.from_env()
    app = build_app(MODEL, load_project(PROJECT_ROOT, ""), settings, ServeOptions())
    bearer = {"Authorization": f"Bearer {KEY}"}
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert app.state.service.watcher.wait_first_refresh(120)
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["champion"] is None
        assert "not in the Feast registry" in " ".join(ready.json()["reasons"])

        answer = client.post(f"/v1/models/{MODEL}/predict", json=CALL, headers=bearer)
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith(f"no servable version of '{MODEL}'")
        refused = client.post(f"/v1/models/{MODEL}/predict", json=CALL)
        assert refused.status_code == 401
        malformed = client.post(f"/v1/models/{MODEL}/predict", json={"entity": {}}, headers=bearer)
        assert malformed.status_code == 422
        other = client.post("/v1/models/churn/predict/batch", json={}, headers=bearer)
        assert other.status_code == 404
        ids = {r.json()["request_id"]: r.status_code for r in (answer, refused, malformed, other)}
        assert all(r.headers["X-Request-ID"] in ids for r in (answer, refused, malformed, other))
        metrics = client.get("/metrics").text
        assert 'status="503"' in metrics and KEY not in metrics
    # The app's end closed the trail: everything is in the audit database.
    calls = {
        c.request_id: c
        for model in (MODEL, "churn")
        for c in query_calls(settings.audit_url, model, limit=100)
    }
    assert {i: calls[i].status_code for i in ids} == ids
    assert calls[refused.json()["request_id"]].caller == "unauthenticated"
    assert calls[answer.json()["request_id"]].caller == "checkout"
    assert calls[answer.json()["request_id"]].entity == CALL["entity"]
    assert "entity" in (calls[malformed.json()["request_id"]].error or "")
