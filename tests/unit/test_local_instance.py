"""The local Dagster instance (deploy/local/dagster.yaml, written by `make dev`/`make demo` and the
CLI): pools have a limit, one training run per model, telemetry off; an operator's file is kept."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ml_platform.cli.launch import write_local_instance_config


def test_an_instance_from_the_local_config_limits_the_gpu_pool_and_training_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster"
    (home).mkdir()
    (home / "dagster.yaml").touch()  # what an earlier CLI left: Dagster's defaults

    assert write_local_instance_config(home)

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        # The UI's "no slots configured" for gpu-t4 is a pool without a limit.
        assert instance.event_log_storage.get_concurrency_info("gpu-t4").limit == 1
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        limits = queue.tag_concurrency_limits
        assert {
            "key": "ml_platform/training",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        } in limits
        assert instance.get_settings("telemetry") == {"enabled": False}


def test_an_operators_dagster_yaml_is_kept(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")

    assert not write_local_instance_config(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"
