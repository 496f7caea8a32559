"""A training step killed with SIGKILL mid-training resumes from its checkpoint on re-execution."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import torch

from ml_platform.core.settings import PlatformSettings
from ml_platform.registry.client import ModelRegistry
from tests.e2e import kill_target, loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 12


def newest_checkpoint_epoch(settings: PlatformSettings) -> int:
    files = list(Path(settings.checkpoint_root, loans.MODEL).glob("*/last.pt"))
    if not files:
        return 0
    try:
        return int(torch.load(files[0], weights_only=True)["epoch"])
    except Exception:  # being replaced right now
        return 0


@pytest.mark.slow
def test_kill_9_mid_training_then_reexecute_from_failure(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_dir = loans.write_specs(
        tmp_path / "specs",
        training={"epochs": EPOCHS, "batch_size": 64, "early_stopping_patience": EPOCHS},
        model={"params": {"hidden_sizes": [256, 256]}},
    )
    monkeypatch.setenv("ML_PLATFORM_SPEC_PATH", str(spec_dir))
    settings = PlatformSettings.from_env()
    registry = ModelRegistry.for_settings(settings)
    loans.write_frames(settings, loans.good_frames(rows=60_000))
    Path(os.environ["DAGSTER_HOME"], "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.kill_target"],
        cwd=PROJECT_ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while newest_checkpoint_epoch(settings) < 2:
        assert process.poll() is None, "training finished before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = newest_checkpoint_epoch(settings)
    assert 2 <= killed_at < EPOCHS
    assert registry.registered_versions(loans.MODEL) == []  # nothing partial

    with dg.DagsterInstance.get() as instance:
        [killed_run] = instance.get_runs()
        # The run monitoring daemon marks runs whose process died as failed; do what it does.
        instance.report_run_failed(killed_run)
        result = dg.execute_job(
            dg.reconstructable(kill_target.training_job),
            instance=instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(killed_run.run_id, instance),
        )
        assert result.success
        executed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
        assert "loan_default__model" in executed
        assert "loan_default__training_set" not in executed  # succeeded before the kill
        materialization = instance.get_latest_materialization_event(
            dg.AssetKey([loans.MODEL, "model"])
        )
        assert materialization is not None and materialization.asset_materialization is not None
        metadata = materialization.asset_materialization.metadata
        assert metadata["resumed_from_epoch"].value >= killed_at
        assert metadata["epochs_run"].value == EPOCHS
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        assert any("resuming from checkpoint at epoch" in message for message in logs)

    assert registry.registered_versions(loans.MODEL) == ["1"]
    assert registry.champion_version(loans.MODEL) == "1"
