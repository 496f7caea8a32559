"""Canary deployment: the registry's serving state and the canary decision on measured figures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ml_platform.registry.client import ModelRegistry, ServingState
from ml_platform.registry.tags import CANARY_ALIAS, TAG_CANARY_SHARE, TAG_CANARY_SINCE

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A registry on a fresh SQLite backend with model ``toy`` in three versions."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    registry = ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
    )
    registry.client.create_registered_model("toy")
    for _ in range(3):
        registry.client.create_model_version("toy", source=str(tmp_path / "artifacts"))
    return registry


def test_serving_state_reads_champion_canary_share_and_start(registry: ModelRegistry) -> None:
    assert registry.serving_state("absent") == ServingState(champion=None, canary=None)
    registry.set_champion("toy", "1")
    assert registry.serving_state("toy") == ServingState(champion="1", canary=None)

    registry.set_canary("toy", "2", 0.2, START)
    assert registry.serving_state("toy") == ServingState("1", "2", 0.2, START)

    registry.clear_canary("toy")
    registry.clear_canary("toy")  # clearing twice is fine
    assert registry.serving_state("toy") == ServingState(champion="1", canary=None)
    tags = registry.client.get_registered_model("toy").tags
    assert TAG_CANARY_SHARE not in tags and TAG_CANARY_SINCE not in tags


def test_a_canary_alias_without_a_readable_share_is_no_canary(registry: ModelRegistry) -> None:
    registry.client.set_registered_model_alias("toy", CANARY_ALIAS, "3")
    assert registry.serving_state("toy").canary is None
    registry.client.set_registered_model_tag("toy", TAG_CANARY_SHARE, "lots")
    assert registry.serving_state("toy").canary is None
    registry.client.set_registered_model_tag("toy", TAG_CANARY_SHARE, "0.5")
    assert registry.serving_state("toy") == ServingState(None, "3", 0.5, None)


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_set_canary_refuses_a_share_outside_zero_one(registry: ModelRegistry, share: float) -> None:
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        registry.set_canary("toy", "2", share, START)
    assert registry.serving_state("toy").canary is None
