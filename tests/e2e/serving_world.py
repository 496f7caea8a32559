"""The demo's state with a running prediction service, for the serving e2e tests.

``build_world`` trains the fraud example (small) in its own ML_PLATFORM_HOME: a champion, then a
forced retraining that registers a second version whose gates pass. ``start_service`` runs the
real ``ml-platform serve`` as a subprocess on a free localhost port; ``Service`` calls it over
HTTP with an API key and keeps a ledger of every call made (request id, caller, status), so a
test can find each one in the call trail. Other serving tests may import these helpers.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.core.settings import PlatformSettings
from ml_platform.lifecycle.records import TAG_EVALUATION, StepContext
from ml_platform.registry.client import ModelRegistry
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.loading import load_project
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud_detection"
ROWS = "20000"
CLEARED_ENV = (
    *loans.CLEARED_ENV,
    "ML_PLATFORM_SERVING_API_KEYS",
    "ML_PLATFORM_SERVING_API_KEYS_FILE",
    "ML_PLATFORM_SERVING_JOURNAL_DIR",
)
REQUEST_COLUMNS = ["amount", "hour_of_day", "is_international", "channel", "merchant_category"]
ENTITY_COLUMNS = ["customer_id", "merchant_id"]


@dataclass
class World:
    """The trained example: its home, engines, specs and two gated versions.

    Attributes:
        root: The temporary directory holding the home.
        home: ML_PLATFORM_HOME.
        settings: The platform settings of the home.
        registry: Its MLflow registry.
        audit: Its audit log.
        catalog: The project's specs.
        champion: The champion version after both trainings.
        challenger: The other version (its gates passed too).
    """

    root: Path
    home: Path
    settings: PlatformSettings
    registry: ModelRegistry
    audit: AuditLog
    catalog: Catalog
    champion: str
    challenger: str

    @property
    def step(self) -> StepContext:
        """A step context on the world's engines (for the lifecycle functions)."""
        return StepContext(self.settings, self.registry, self.audit)

    def payments(self) -> pd.DataFrame:
        """The generated payments (the label source), newest last."""
        path = self.settings.data_path("payments", "transactions.parquet")
        return pd.read_parquet(path).sort_values("event_timestamp").reset_index(drop=True)


def _environment(home: Path) -> dict[str, str]:
    """The variables the world and its service run with."""
    return {
        "ML_PLATFORM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ML_PLATFORM_DEMO_ROWS": ROWS,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


@contextmanager
def world_environment(root: Path) -> Iterator[Path]:
    """Point the process at a fresh home under ``root`` (restored afterwards).

    Args:
        root: A temporary directory.

    Yields:
        The home.
    """
    home = root / "home"
    (home / "dagster").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in CLEARED_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in _environment(home).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(PROJECT_ROOT)
        yield home


def train(instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> None:
    """Run the example's training job in process on ``instance``.

    Args:
        instance: The Dagster instance.
        tags: Run tags (``ml_platform/force_retrain`` forces a new version).
    """
    from ml_platform.definitions import build_definitions

    defs = build_definitions(PROJECT_ROOT, spec_path="")
    job = defs.resolve_job_def(f"{MODEL}_training")
    assert job.execute_in_process(instance=instance, tags=tags).success


def build_world(root: Path, after_first_training: Callable[[World], None] | None = None) -> World:
    """Train a champion and a second gated version (call inside ``world_environment``).

    Args:
        root: The temporary directory holding the home.
        after_first_training: Called once the champion exists, before the second training
            (e.g. to start the service so that its start-up overlaps the training).

    Returns:
        The world.
    """
    settings = PlatformSettings.from_env()
    registry = ModelRegistry.for_settings(settings)
    audit = AuditLog(settings.audit_url)
    catalog = load_project(PROJECT_ROOT, "")
    with dg.DagsterInstance.ephemeral() as instance:
        train(instance)
        first = registry.champion_version(MODEL)
        assert first is not None
        world = World(root, settings.home, settings, registry, audit, catalog, first, first)
        if after_first_training is not None:
            after_first_training(world)
        train(instance, {"ml_platform/force_retrain": "true"})
    versions = registry.registered_versions(MODEL)
    assert len(versions) == 2, versions
    champion = registry.champion_version(MODEL)
    assert champion is not None
    world.champion = champion
    world.challenger = next(v for v in versions if v != champion)
    for version in versions:
        tags = registry.client.get_model_version(MODEL, version).tags
        assert tags[TAG_EVALUATION] == "passed", (version, tags)
    return world


def free_port() -> int:
    """A TCP port free on localhost now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Call:
    """One HTTP call made to the service, as the ledger keeps it.

    Attributes:
        request_id: The id the answer carried.
        caller: Who the trail must name (a key's name, or ``unauthenticated``).
        status: The HTTP status answered.
        model: The model called.
    """

    request_id: str
    caller: str
    status: int
    model: str


@dataclass
class Service:
    """A running ``ml-platform serve`` subprocess and an HTTP client on it.

    Attributes:
        process: The subprocess.
        url: Its base URL.
        keys: API key by caller name.
        log: The file holding its stdout and stderr.
        ledger: Every call made through ``post`` (batch instances each).
    """

    process: subprocess.Popen[bytes]
    url: str
    keys: dict[str, str]
    log: Path
    ledger: list[Call] = field(default_factory=list)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60.0))

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def get(self, path: str) -> httpx.Response:
        """GET ``path`` (health, readiness, metrics, OpenAPI)."""
        return self.client.get(f"{self.url}{path}")

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        caller: str | None = "checkout",
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        model: str = MODEL,
    ) -> httpx.Response:
        """POST a call as ``caller`` (None: no key) and add it to the ledger.

        Args:
            path: ``/v1/models/...``.
            body: The JSON body.
            caller: The caller whose key is sent as a bearer token; None sends none.
            headers: Extra headers (e.g. a wrong key).
            content: A raw body instead of ``body``.
            model: The model the path names (for the ledger).

        Returns:
            The response.
        """
        sent = dict(headers or {})
        if caller is not None:
            sent["Authorization"] = f"Bearer {self.keys[caller]}"
        if content is not None:
            sent.setdefault("Content-Type", "application/json")
            response = self.client.post(f"{self.url}{path}", content=content, headers=sent)
        else:
            response = self.client.post(f"{self.url}{path}", json=body, headers=sent)
        recorded = caller if response.status_code != 401 else "unauthenticated"
        data = response.json()
        if response.status_code == 200 and "predictions" in data:
            ids = [p["request_id"] for p in data["predictions"]]
        else:  # a failed batch names each instance's call
            ids = data.get("request_ids") or [data["request_id"]]
        assert response.headers["X-Request-ID"] == ids[0]
        for request_id in ids:
            self.ledger.append(Call(request_id, recorded or "?", response.status_code, model))
        return response

    def predict(self, entity: dict[str, Any], features: dict[str, Any], **kwargs: Any) -> Any:
        """One prediction call; asserts a 200 and returns the answer."""
        response = self.post(
            f"/v1/models/{MODEL}/predict", {"entity": entity, "features": features}, **kwargs
        )
        assert response.status_code == 200, response.text
        return response.json()

    def batch(self, instances: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
        """One batch call; asserts a 200 and returns the answers."""
        response = self.post(
            f"/v1/models/{MODEL}/predict/batch", {"instances": instances}, **kwargs
        )
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    def readiness(self) -> dict[str, Any]:
        """``/readyz``'s body (200 or 503)."""
        return self.get("/readyz").json()

    def wait_for(
        self, condition: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Poll ``/readyz`` until ``condition`` holds on its body (bounded by ``timeout``).

        Args:
            condition: Tested on each ``/readyz`` body.
            what: What is awaited, for the failure message.
            timeout: Seconds at most.

        Returns:
            The body that satisfied it.
        """
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.alive(), f"the service died:\n{self.log.read_text()[-5000:]}"
            try:
                body = self.readiness()
            except httpx.TransportError:
                body = {}
            if body and condition(body):
                return body
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; last /readyz: {body}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the service and wait for its exit (killed after ``timeout``).

        Returns:
            Its exit status.
        """
        self.client.close()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"the service did not stop within {timeout} s") from None


def new_keys() -> dict[str, str]:
    """Fresh API keys for two callers, ``checkout`` and ``backoffice``."""
    return {name: secrets.token_urlsafe(24) for name in ("checkout", "backoffice")}


def start_service(
    home: Path, keys: dict[str, str], *, refresh_seconds: float = 1.0, port: int | None = None
) -> Service:
    """Start ``ml-platform serve fraud_detection`` on a free localhost port (not awaited).

    Args:
        home: The ML_PLATFORM_HOME it serves from.
        keys: API key by caller name (given through ML_PLATFORM_SERVING_API_KEYS).
        refresh_seconds: How often it polls the registry.
        port: The port (default: a free one).

    Returns:
        The service; call ``wait_for`` (or ``wait_ready``) before sending calls.
    """
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env.update(_environment(home))
    env["ML_PLATFORM_SERVING_API_KEYS"] = ",".join(f"{n}:{k}" for n, k in keys.items())
    log = home.parent / f"serve-{port}.log"
    command = [
        str(PROJECT_ROOT / ".venv" / "bin" / "ml-platform"),
        "serve",
        MODEL,
        "--port",
        str(port),
        "--refresh-seconds",
        str(refresh_seconds),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    return Service(process, f"http://127.0.0.1:{port}", keys, log)


def wait_ready(service: Service, timeout: float = 240.0) -> dict[str, Any]:
    """Wait until the service answers ``/readyz`` with 200 (a champion loaded).

    Args:
        service: The service.
        timeout: Seconds at most (importing Feast, MLflow and torch takes a while).

    Returns:
        The ``/readyz`` body.
    """
    return service.wait_for(lambda body: body.get("status") == "ready", "readiness", timeout)


def instance(row: pd.Series) -> dict[str, Any]:
    """A payment as a call: its entity's join keys and request-time features.

    Args:
        row: A row of the payments.

    Returns:
        ``{"entity": ..., "features": ..., "ids": {"transaction_id": ...}}``.
    """
    return {
        "entity": {c: int(row[c]) for c in ENTITY_COLUMNS},
        "features": {
            c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in REQUEST_COLUMNS
        },
        "ids": {"transaction_id": int(row["transaction_id"])},
    }


def distinct_entities(payments: pd.DataFrame, count: int) -> list[dict[str, Any]]:
    """Calls for ``count`` payments of distinct entities, newest first.

    Args:
        payments: The payments.
        count: How many.

    Returns:
        One call per distinct (customer_id, merchant_id), at most ``count``.
    """
    newest = payments.iloc[::-1].drop_duplicates(ENTITY_COLUMNS).head(count)
    assert len(newest) == count, f"only {len(newest)} distinct entities"
    return [instance(row) for _, row in newest.iterrows()]
