"""The servers the UI test drives: `dagster dev` and the MLflow UI, each in its own process
group on a free localhost port, stopped with all their children even when the test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

from ml_platform.core.settings import PlatformSettings
from tests.e2e.test_webserver import ASSET_KEYS_QUERY, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

__all__ = ["dagster_and_mlflow"]


@contextmanager
def _process_groups(commands: dict[Path, list[str]], env: dict[str, str]) -> Iterator[None]:
    """Run each command (keyed by its log file) in a new session; on exit SIGTERM every group,
    give them 20 s, then SIGKILL what is left (a run worker, MLflow's job consumers)."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for log_path, command in commands.items():
            with log_path.open("w") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=PROJECT_ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # the servers start children of their own
                    )
                )
        yield
        for (log_path, command), process in zip(commands.items(), processes, strict=True):
            if process.poll() is not None:
                raise AssertionError(f"{command[0]} exited early:\n{_tail(log_path)}")
    finally:
        for process in processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for process in processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


def _wait_until_up(url: str, log_path: Path, seconds: float) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer in {seconds:.0f} s:\n{_tail(log_path)}")
        time.sleep(1)


@contextmanager
def dagster_and_mlflow(
    settings: PlatformSettings, env: dict[str, str], logs: Path, wait_for_asset: str
) -> Iterator[tuple[str, str]]:
    """`dagster dev` (webserver and daemon) on workspace.yaml and the MLflow UI on the
    platform's tracking store (as `make dev` and `make mlflow` start them), started together.

    The platform's links to MLflow (``MLFLOW_UI_URL``) and to Dagster runs (``DAGSTER_UI_URL``)
    point at these two.

    Yields:
        The base URLs of the Dagster UI and the MLflow UI, once the code location shows
        ``wait_for_asset`` (a ``/``-joined asset key) and MLflow answers.
    """
    dagster_port, mlflow_port = free_port(), free_port()
    dagster_url = f"http://127.0.0.1:{dagster_port}"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    mlflow_command = [
        str(BIN / "mlflow"),
        "ui",
        "--backend-store-uri",
        settings.mlflow_tracking_uri,
        "--default-artifact-root",
        settings.mlflow_artifact_root,
        "--host",
        "127.0.0.1",
        "--port",
        str(mlflow_port),
        "--workers",
        "1",
    ]
    dagster_command = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
    dagster_log, mlflow_log = logs / "dagster_dev.log", logs / "mlflow_ui.log"
    commands = {
        mlflow_log: mlflow_command,
        dagster_log: [*dagster_command, "-p", str(dagster_port)],
    }
    # The platform's links point at these two UIs; MLflow's job runner (7 processes) is not needed.
    env = {
        **env,
        "MLFLOW_UI_URL": mlflow_url,
        "DAGSTER_UI_URL": dagster_url,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with _process_groups(commands, env):
        _wait_until_up(f"{dagster_url}/server_info", dagster_log, 240)
        _wait_until_up(f"{mlflow_url}/health", mlflow_log, 240)
        deadline = time.monotonic() + 180
        keys: set[str] = set()
        while wait_for_asset not in keys:  # the code location loads in the background
            if time.monotonic() > deadline:
                raise AssertionError(f"{wait_for_asset} did not load:\n{_tail(dagster_log)}")
            response = requests.post(
                f"{dagster_url}/graphql", json={"query": ASSET_KEYS_QUERY}, timeout=30
            )
            nodes = (response.json().get("data") or {}).get("assetNodes") or []
            keys = {"/".join(node["assetKey"]["path"]) for node in nodes}
            time.sleep(1)
        yield dagster_url, mlflow_url
