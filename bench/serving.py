"""Online serving: the prediction service against its floor, Feast's online lookup plus the model.

A bounded local load test (localhost only, a fixed number of requests, it stops by itself):

1. a demo home (``ml-platform demo --rows N`` in a temporary ``ML_PLATFORM_HOME``, or ``--home``
   reused when it already has a champion);
2. ``ml-platform serve MODEL`` on a free localhost port, with an API key (so every call is
   authenticated and lands in the call trail) and its journal in the home;
3. single-prediction requests for real payments of the demo (their entity keys, request-time
   features and transaction ids), one after another over a keep-alive connection, after a
   warm-up;
4. in the same process, the floor for the same rows: Feast's own
   ``FeatureStore.get_online_features`` with the model's feature references (the refs its
   training set used) and ``predict`` of the same loaded model version on the one-row frame;
5. service and floor interleaved in blocks (alternating which goes first) so that both share the
   machine's noise; optionally a concurrent run (``--concurrency C`` threads, each its own
   connection);
6. the service stopped with SIGTERM (graceful: it flushes its journal), then every request id it
   answered looked up in the call trail (``ml_platform.serving.calls.query_calls``).

Both sides run with ``OMP_NUM_THREADS=1`` (unless set), as the default profile's pod does.
Prints p50/p99/mean latency and throughput of both, the ratio service p99 / floor p99 (goal: at
most 1.5x, with the audit trail on), whether the predictions agree, and the trail's count.
Usage: .venv/bin/python bench/serving.py [--rows 100000] [--requests 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CALLER = "bench"
READY_TIMEOUT = 300.0  # seconds for the service to load its champion


@dataclass
class Timings:
    """Latencies in seconds of one side, and the wall time they took in total."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0

    def add(self, other: Timings) -> None:
        self.latencies += other.latencies
        self.wall += other.wall

    def row(self, name: str) -> str:
        values = np.array(self.latencies) * 1000
        return (
            f"| {name} | {len(values):,} | {np.percentile(values, 50):.2f} | "
            f"{np.percentile(values, 99):.2f} | {values.mean():.2f} | "
            f"{len(values) / self.wall:,.0f} |"
        )

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def platform_env(home: Path) -> dict[str, str]:
    """This environment without platform, MLflow and Dagster settings, on ``home``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ML_PLATFORM_", "MLFLOW_", "DAGSTER_"))
    }
    env["ML_PLATFORM_HOME"] = str(home)
    env["DAGSTER_HOME"] = str(home / "dagster")
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


def prepare_home(home: Path, rows: int, model: str) -> None:
    """Run the demo in ``home`` unless it already holds a champion of ``model``."""
    environment = platform_env(home)
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    os.environ.update(environment)
    if (home / "mlflow.db").exists() and champion_version(model) is not None:
        print(f"reusing the demo home {home}")
        return
    print(f"building the demo home {home} (ml-platform demo --rows {rows})", flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        [str(VENV_BIN / "ml-platform"), "demo", "--rows", str(rows)],
        cwd=PROJECT_ROOT,
        env=platform_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        sys.exit(f"ml-platform demo failed:\n{done.stdout[-4000:]}")
    print(f"demo done in {time.perf_counter() - started:.0f} s")


def champion_version(model: str) -> str | None:
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.registry.client import ModelRegistry

    registry = ModelRegistry.for_settings(PlatformSettings.from_env())
    return registry.champion_version(model)


@dataclass(frozen=True)
class Call:
    """One request: the JSON body the service gets and the same values for the floor."""

    entity: dict[str, Any]
    features: dict[str, Any]
    ids: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"entity": self.entity, "features": self.features, "ids": self.ids}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def sample_calls(model: str, count: int, seed: int) -> list[Call]:
    """``count`` payments of the label source's newest two weeks (their entities are online)."""
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.spec.loading import load_project

    catalog = load_project(PROJECT_ROOT)
    spec, resolved = catalog.models[model], catalog.resolved[model]
    _, source = catalog.sources()[spec.label.source]
    frame = pd.read_parquet(PlatformSettings.from_env().data_path(source.path))
    time_column = resolved.timestamp_column
    newest = frame[frame[time_column] >= frame[time_column].max() - pd.Timedelta(days=14)]
    rows = newest.sample(n=count, replace=len(newest) < count, random_state=seed)
    id_columns = [
        c for c in frame.columns if c.endswith("_id") and c not in resolved.entity_columns
    ]
    return [
        Call(
            entity={c: _plain(row[c]) for c in resolved.entity_columns},
            features={c: _plain(row[c]) for c in resolved.request},
            ids={c: _plain(row[c]) for c in id_columns},
        )
        for _, row in rows.iterrows()
    ]


class Floor:
    """Feast's online retrieval plus the model's predict, in process: what the service adds to."""

    def __init__(self, model: str, version: str) -> None:
        from ml_platform.core.settings import PlatformSettings
        from ml_platform.features.store import feature_store
        from ml_platform.registry.client import ModelRegistry
        from ml_platform.spec.loading import load_project

        settings = PlatformSettings.from_env()
        self.resolved = load_project(PROJECT_ROOT).resolved[model]
        self.refs = self.resolved.feature_refs
        self.inputs = self.resolved.model_inputs
        self.store = feature_store(settings)
        self.model = ModelRegistry.for_settings(settings).load_model(model, version)

    def predict(self, call: Call) -> float:
        online = self.store.get_online_features(
            features=self.refs, entity_rows=[call.entity]
        ).to_dict()
        row = {**call.features, **{name: values[0] for name, values in online.items()}}
        frame = pd.DataFrame({name: [row.get(name)] for name in self.inputs})
        return float(np.ravel(self.model.predict(frame))[0])


class Service:
    """``ml-platform serve MODEL`` in a subprocess on a free localhost port."""

    def __init__(self, model: str, home: Path, log: Path) -> None:
        self.model = model
        self.key = secrets.token_urlsafe(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = platform_env(home)
        env["ML_PLATFORM_SERVING_API_KEYS"] = f"{CALLER}:{self.key}"
        env["ML_PLATFORM_SERVING_JOURNAL_DIR"] = str(home / "serving" / "journal" / model)
        self.log = log
        self.process = subprocess.Popen(
            [
                *(str(VENV_BIN / "ml-platform"), "serve", model),
                *("--host", "127.0.0.1", "--port", str(self.port)),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.fail(f"the service exited with {self.process.returncode}")
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.5)
        self.fail(f"not ready after {READY_TIMEOUT:.0f} s: {last}")

    def stop(self) -> str:
        """SIGTERM (what Kubernetes sends), then wait: the service drains and flushes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self.fail("the service did not stop within 60 s of SIGTERM")
        # uvicorn re-raises the signal once it has shut down: -15 after a complete shutdown.
        graceful = "Application shutdown complete" in self.log.read_text()
        return f"exit {self.process.returncode}, " + (
            "graceful shutdown" if graceful else "NO graceful shutdown in its log"
        )

    def fail(self, message: str) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        sys.exit(f"{message}\n--- service log (end) ---\n{self.log.read_text()[-4000:]}")


class Client:
    """A keep-alive HTTP/1.1 connection from the standard library: the lightest Python client, so
    that the client's own time weighs as little as possible in the service's latency."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        self.path = f"/v1/models/{service.model}/predict"
        self.headers = {**service.headers(), "Content-Type": "application/json"}

    def predict(self, call: Call) -> dict[str, Any]:
        try:
            self.connection.request("POST", self.path, json.dumps(call.body()), self.headers)
            answer = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # uvicorn closes a connection idle for 5 s (while the floor's block ran): the request
            # never reached it; send it again on a new connection.
            self.connection.close()
            self.connection.request("POST", self.path, json.dumps(call.body()), self.headers)
            answer = self.connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            self.service.fail(f"request failed: {answer.status} {body[:500]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.connection.close()


def timed(
    calls: list[Call], one: Callable[[Call], Any], pause: float = 0.0
) -> tuple[Timings, list[Any]]:
    """Each call's latency; ``pause`` seconds between calls, outside the timings.

    The pause is the same on both sides. Without it the floor is a busy loop while the service
    sleeps between requests, and on an oversubscribed machine Linux's scheduler favours the task
    that slept: the floor measured 5 ms of wall time for 1.2 ms of CPU time per predict.
    """
    timings, results = Timings(), []
    started = time.perf_counter()
    for call in calls:
        before = time.perf_counter()
        results.append(one(call))
        timings.latencies.append(time.perf_counter() - before)
        if pause:
            time.sleep(pause)
    timings.wall = time.perf_counter() - started
    return timings, results


def concurrent(
    service: Service, calls: list[Call], threads: int
) -> tuple[Timings, list[dict[str, Any]]]:
    """``threads`` clients, each on its own connection, splitting ``calls`` between them."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    answers: list[list[dict[str, Any]]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        path = f"/v1/models/{service.model}/predict"
        headers = {**service.headers(), "Content-Type": "application/json"}
        try:
            for call in calls[index::threads]:
                before = time.perf_counter()
                connection.request("POST", path, json.dumps(call.body()), headers)
                answer = connection.getresponse()
                body = answer.read()
                latencies[index].append(time.perf_counter() - before)
                if answer.status != 200:
                    errors.append(f"{answer.status} {body[:200]!r}")
                    return
                answers[index].append(json.loads(body))
        finally:
            connection.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    wall = time.perf_counter() - started
    if errors or any(w.is_alive() for w in workers):
        service.fail(f"concurrent run failed: {errors[:3]}")
    return (
        Timings([x for part in latencies for x in part], wall),
        [a for part in answers for a in part],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", default="fraud_detection")
    parser.add_argument("--home", type=Path, help="a demo home to reuse or build (default: temp)")
    parser.add_argument("--rows", type=int, default=100_000, help="demo payments if built")
    parser.add_argument("--requests", type=int, default=2000, help="measured per side")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls per side")
    parser.add_argument("--blocks", type=int, default=10, help="interleaved blocks per side")
    parser.add_argument("--concurrency", type=int, default=0, help="threads of a concurrent run")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--pause-ms", type=float, default=1.0, help="pause between calls, both sides (untimed)"
    )
    args = parser.parse_args()
    if args.requests < args.blocks or args.blocks < 1:
        parser.error("--requests must be at least --blocks, and --blocks at least 1")
    # Both sides run as the default serving profile's pod does (cpu-small: 1 CPU, and
    # OMP_NUM_THREADS=1 in deploy/k8s/serving.yaml). With more threads, torch's idle OpenMP
    # threads spin while waiting, and on a shared machine that spinning, not the work, decides
    # the latency of whichever process spins more (measured here: 10 ms against 2 ms per predict).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    temporary = None
    if args.home is None:
        temporary = Path(tempfile.mkdtemp(prefix="bench-serving-"))
        args.home = temporary / "home"
    home = args.home.resolve()
    try:
        run(args, home)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def run(args: argparse.Namespace, home: Path) -> None:
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.serving.calls import query_calls

    prepare_home(home, args.rows, args.model)
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    total = args.warmup + args.requests + args.requests * (args.concurrency > 0)
    calls = sample_calls(args.model, total, args.seed)
    warmup, measured = calls[: args.warmup], calls[args.warmup : args.warmup + args.requests]
    extra = calls[args.warmup + args.requests :]
    started_at = datetime.now(UTC)
    service = Service(args.model, home, home / "bench-serving.log")
    answered: list[dict[str, Any]] = []
    try:
        service.wait_ready()
        client = Client(service)
        served = client.predict

        first = served(warmup[0] if warmup else measured[0])
        version = first["model_version"]
        answered.append(first)
        floor = Floor(args.model, version)
        print(f"serving {args.model} version {version} on {service.url}; floor in process")
        answered += timed(warmup, served)[1]
        timed(warmup, floor.predict)
        service_timings, floor_timings = Timings(), Timings()
        differences: list[float] = []
        size = len(measured) // args.blocks
        for block in range(args.blocks):
            part = measured[block * size : (block + 1) * size if block < args.blocks - 1 else None]
            sides = [("service", served), ("floor", floor.predict)]
            results: dict[str, list[Any]] = {}
            for name, one in sides if block % 2 == 0 else sides[::-1]:
                timings, results[name] = timed(part, one, args.pause_ms / 1000)
                (service_timings if name == "service" else floor_timings).add(timings)
            answered += results["service"]
            differences += [
                abs(float(np.ravel([a["prediction"]])[0]) - b)
                for a, b in zip(results["service"], results["floor"], strict=True)
            ]
        concurrent_timings = None
        if args.concurrency:
            concurrent_timings, answers = concurrent(service, extra, args.concurrency)
            answered += answers
        client.close()
    finally:
        status = service.stop()
    versions = {a["model_version"] for a in answered}

    ids = {a["request_id"] for a in answered}
    audit_url = PlatformSettings.from_env().audit_url
    recorded = query_calls(
        audit_url, args.model, start=started_at, caller=CALLER, limit=len(ids) + 1000
    )
    found = ids & {r.request_id for r in recorded}
    measured_ids = {a["request_id"] for a in answered[1 + len(warmup) :][: len(measured)]}
    inside = Timings(
        [r.latency_ms / 1000 for r in recorded if r.request_id in measured_ids],
        service_timings.wall,
    )

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nmodel {args.model}, versions served {sorted(versions)}; service: {status}")
    print(
        f"machine: {os.cpu_count()} cores, load average now {load} (before: {load_before}); "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} on both sides"
    )
    print(
        f"{len(measured):,} single predictions per side in {args.blocks} interleaved blocks, "
        f"{args.pause_ms:g} ms pause between calls (calls/s counts the pauses)"
    )
    print("| path | calls | p50 ms | p99 ms | mean ms | calls/s |")
    print("|---|---|---|---|---|---|")
    print(service_timings.row("service, sequential (HTTP, auth, Feast online, model, trail)"))
    print(floor_timings.row("floor: Feast get_online_features + predict, in process"))
    print(inside.row("service, its own latency_ms in the trail (before journal write, no client)"))
    if concurrent_timings is not None:
        print(concurrent_timings.row(f"service, {args.concurrency} concurrent clients"))
    ratio = service_timings.p99 / floor_timings.p99
    print(f"\nservice p99 / floor p99 = {ratio:.2f}x (goal <= 1.5x)")
    medians = [statistics.median(t.latencies) for t in (service_timings, floor_timings)]
    print(f"service p50 / floor p50 = {medians[0] / medians[1]:.2f}x")
    print(f"largest |service - floor| prediction difference: {max(differences):.2e}")
    print(f"call trail: {len(found):,} of {len(ids):,} answered calls recorded (caller {CALLER!r})")
    if len(found) != len(ids):
        sys.exit("calls are missing from the trail")


if __name__ == "__main__":
    main()
