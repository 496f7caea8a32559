"""The Dagster UI's own path: `dagster dev` (webserver and daemon, as `make dev` starts them)
loads workspace.yaml, shows the graph, and runs a job launched through its GraphQL API (what the
Launchpad's "Launch run" button sends)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from ml_platform.core.settings import PlatformSettings
from ml_platform.registry.client import ModelRegistry
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ASSET_KEYS_QUERY = "{ assetNodes { assetKey { path } } }"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_launch_training_from_the_webserver(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = loans.write_specs(tmp_path / "specs")
    monkeypatch.setenv("ML_PLATFORM_SPEC_PATH", str(specs))
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    port = free_port()
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # dagster dev starts the webserver and daemon as children
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the webserver did not start in 180 s"
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        deadline = time.monotonic() + 120
        keys: set[str] = set()
        while "loan_default/model" not in keys:  # the code location loads in the background
            assert time.monotonic() < deadline, "the code location did not load"
            response = requests.post(f"{url}/graphql", json={"query": ASSET_KEYS_QUERY}, timeout=30)
            nodes = (response.json().get("data") or {}).get("assetNodes") or []
            keys = {"/".join(node["assetKey"]["path"]) for node in nodes}
            time.sleep(1)
        assert {"fraud_detection/champion", "features/bureau", "loan_default/predictions"} <= keys

        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution("loan_default_training")
        deadline = time.monotonic() + 400
        status = client.get_run_status(run_id)
        while status not in (
            DagsterRunStatus.SUCCESS,
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.CANCELED,
        ):
            assert time.monotonic() < deadline, f"run {run_id} still {status} after 400 s"
            time.sleep(2)
            status = client.get_run_status(run_id)
        assert status == DagsterRunStatus.SUCCESS
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    assert ModelRegistry.for_settings(settings).champion_version(loans.MODEL) == "1"
