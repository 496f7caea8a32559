"""Lifecycle steps called directly: what determines a model, how each flavor path fits, and the
promotion override against a fake registry and a real audit log."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml_platform.core.audit import AuditLog
from ml_platform.lifecycle.promote import override_promotion
from ml_platform.lifecycle.train import _fit
from ml_platform.lifecycle.training_inputs import training_config, training_params
from ml_platform.spec.model import ModelSpec
from ml_platform.training.schema import FeatureSchema
from tests.e2e import loans

SCHEMA = FeatureSchema(
    numeric=("amount", "age"), categorical=("channel",), label="label", task="binary_classification"
)


def spec(**changes: Any) -> ModelSpec:
    return ModelSpec.model_validate(loans.model_spec(**changes))


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount, age = rng.normal(0.0, 1.0, rows), rng.normal(40.0, 10.0, rows)
    channel = rng.choice(["web", "app"], rows)
    score = 2.0 * amount - (age - 40.0) / 10.0 + np.where(channel == "web", 1.0, -1.0)
    return pd.DataFrame(
        {"amount": amount, "age": age, "channel": channel, "label": (score > 0).astype(int)}
    )


def test_the_flavor_is_among_what_determines_the_model() -> None:
    torch_params = training_params(spec())
    xgboost_params = training_params(spec(model={"flavor": "xgboost", "params": {}}))
    assert torch_params["flavor"] == "torch"
    assert xgboost_params["flavor"] == "xgboost"
    assert torch_params["model.hidden_sizes"] == [16]


def test_the_device_follows_the_compute_profile() -> None:
    train = frame(50, 0)
    cpu = SimpleNamespace(uses_gpu=False, gpu_count=0, max_runtime_seconds=3600)
    gpu = SimpleNamespace(uses_gpu=True, gpu_count=1, max_runtime_seconds=3600)
    assert training_config(spec(), train, cpu).device == "cpu"  # type: ignore[arg-type]
    assert training_config(spec(), train, gpu).device == "auto"  # type: ignore[arg-type]


@pytest.mark.parametrize("flavor", ["torch", "xgboost"])
def test_the_spec_flavor_fits_a_model_that_saves_its_flavor(flavor: str, tmp_path: Path) -> None:
    from ml_platform.training.flavors.registry import load_fitted

    model_spec = spec(
        model={"flavor": flavor, "params": {"hidden_sizes": [8]} if flavor == "torch" else {}},
        training={"epochs": 3, "batch_size": 64, "learning_rate": 0.01},
    )
    train, validation = frame(300, 1), frame(100, 2)
    cpu = SimpleNamespace(uses_gpu=False, max_runtime_seconds=3600)
    config = training_config(model_spec, train, cpu)  # type: ignore[arg-type]
    epochs: list[int] = []
    run = SimpleNamespace(log_epoch=lambda epoch, metrics: epochs.append(epoch))
    profile = SimpleNamespace(uses_gpu=False, gpu_count=0)
    result = _fit(
        model_spec,
        SCHEMA,
        SimpleNamespace(),  # type: ignore[arg-type]  # the manifest is only read by torchrun
        (train, validation),
        config,
        profile,  # type: ignore[arg-type]
        str(tmp_path / "checkpoints"),
        run,  # type: ignore[arg-type]
        lambda line: None,
    )
    assert result.model.flavor == flavor
    assert epochs == list(range(1, result.epochs_run + 1))
    result.model.save(tmp_path / "model")
    loaded = load_fitted(tmp_path / "model")
    assert loaded.flavor == flavor
    np.testing.assert_allclose(loaded.predict(validation), result.model.predict(validation))
    np.testing.assert_array_equal(loaded.encode_labels(validation), validation["label"].to_numpy())


def test_several_gpus_train_torch_with_torchrun_into_a_torch_fitted_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ml_platform.training.distributed as distributed
    from ml_platform.training.flavors.torch import TorchModel

    # Two "GPUs": torchrun runs two CPU processes with Gloo, as on a multi-GPU pod.
    monkeypatch.setattr(distributed, "nproc_for", lambda gpu_count: 2)
    train, validation = frame(400, 1), frame(200, 2)
    train.to_parquet(tmp_path / "train.parquet")
    validation.to_parquet(tmp_path / "validation.parquet")
    manifest = SimpleNamespace(split_path=lambda split: str(tmp_path / f"{split}.parquet"))
    model_spec = spec(
        model={"params": {"hidden_sizes": [8]}},
        training={"epochs": 2, "batch_size": 40, "learning_rate": 0.01},
    )
    cpu = SimpleNamespace(uses_gpu=False, max_runtime_seconds=3600)
    config = training_config(model_spec, train, cpu)  # type: ignore[arg-type]
    epochs: list[int] = []
    lines: list[str] = []
    result = _fit(
        model_spec,
        SCHEMA,
        manifest,  # type: ignore[arg-type]
        (train, validation),
        config,
        SimpleNamespace(uses_gpu=True, gpu_count=2),  # type: ignore[arg-type]
        str(tmp_path / "checkpoints"),
        SimpleNamespace(log_epoch=lambda epoch, metrics: epochs.append(epoch)),  # type: ignore[arg-type]
        lines.append,
    )
    assert any("torchrun" in line for line in lines)
    assert isinstance(result.model, TorchModel) and result.model.flavor == "torch"
    assert epochs == [1, 2] and result.epochs_run == 2
    assert result.model.predict(validation).shape == (len(validation),)


class FakeRegistry:
    """The registry calls an override makes, kept in memory."""

    def __init__(self, versions: list[str], champion: str | None) -> None:
        self.versions, self.champion = versions, champion
        self.tags: dict[str, dict[str, str]] = {}

    def registered_versions(self, model_name: str) -> list[str]:
        return self.versions

    def champion_version(self, model_name: str) -> str | None:
        return self.champion

    def set_champion(self, model_name: str, version: str) -> None:
        self.champion = version

    def tag_version(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        self.tags.setdefault(version, {}).update(tags)


def test_an_override_moves_the_champion_and_is_audited(tmp_path: Path) -> None:
    registry = FakeRegistry(["1", "2"], champion="2")
    audit = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    previous = override_promotion(
        spec(),
        "1",
        "  rollback: v2 misprices new customers  ",
        "oncall@example.com",
        registry=registry,  # type: ignore[arg-type]
        audit=audit,
        dagster_run_id="run-1",
    )
    assert previous == "2" and registry.champion == "1"
    assert registry.tags["1"]["ml_platform.promotion"] == "override"
    assert registry.tags["1"]["ml_platform.override_reason"] == (
        "rollback: v2 misprices new customers"
    )
    (event,) = audit.events(loans.MODEL, "override_promoted")
    assert event.details["requested_by"] == "oncall@example.com"
    assert event.details["previous_champion"] == "2"
    assert event.dagster_run_id == "run-1"


@pytest.mark.parametrize(
    ("version", "reason", "requested_by", "message"),
    [
        ("1", "too short", "me", "at least 15 characters"),
        ("1", "a long enough reason here", " ", "requested_by"),
        ("9", "a long enough reason here", "me", "has no version '9'"),
    ],
)
def test_an_override_without_reason_requester_or_version_is_refused(
    tmp_path: Path, version: str, reason: str, requested_by: str, message: str
) -> None:
    registry = FakeRegistry(["1"], champion=None)
    audit = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    with pytest.raises(ValueError, match=message):
        override_promotion(
            spec(),
            version,
            reason,
            requested_by,
            registry=registry,  # type: ignore[arg-type]
            audit=audit,
        )
    assert registry.champion is None
    assert audit.events(loans.MODEL) == []
