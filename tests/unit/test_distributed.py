"""Tests for multi-process training: sharding, torchrun runs on CPU with Gloo, resume, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ml_platform.training.config import TrainingConfig
from ml_platform.training.ddp import shard_indices
from ml_platform.training.distributed import (
    DistributedTrainingError,
    nproc_for,
    should_distribute,
    train_with_torchrun,
)
from ml_platform.training.schema import FeatureSchema
from ml_platform.training.trainer import TrainResult, train

SCHEMA = FeatureSchema(
    numeric=("amount", "age"), categorical=("channel",), label="label", task="binary_classification"
)
SMALL_MLP = {"hidden_sizes": [16]}
# Rows and batch divide by 2 processes, so a DDP step takes exactly one process's batch.
CONFIG = TrainingConfig(
    epochs=4,
    batch_size=40,
    learning_rate=1e-2,
    early_stopping_patience=0,
    device="cpu",
    num_threads=1,
)


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(0.0, 1.0, rows)
    age = rng.normal(40.0, 10.0, rows)
    channel = rng.choice(["web", "app"], rows)
    score = 2.0 * amount - (age - 40.0) / 10.0 + np.where(channel == "web", 1.0, -1.0)
    return pd.DataFrame(
        {"amount": amount, "age": age, "channel": channel, "label": (score > 0).astype(int)}
    )


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    train_path: str
    validation_path: str


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    directory = tmp_path_factory.mktemp("splits")
    train_frame, validation_frame = make_frame(400, seed=1), make_frame(200, seed=2)
    train_frame.to_parquet(directory / "train.parquet")
    validation_frame.to_parquet(directory / "validation.parquet")
    return Splits(
        train_frame,
        validation_frame,
        str(directory / "train.parquet"),
        str(directory / "validation.parquet"),
    )


def run_torchrun(
    splits: Splits, output_dir: Path, config: TrainingConfig = CONFIG, **kwargs: object
) -> TrainResult:
    return train_with_torchrun(
        splits.train_path,
        splits.validation_path,
        SCHEMA,
        kwargs.pop("architecture", "mlp"),  # type: ignore[arg-type]
        SMALL_MLP,
        config,
        nproc=2,
        output_dir=str(output_dir),
        **kwargs,  # type: ignore[arg-type]
    )


def assert_same_history(first: list[dict[str, float]], second: list[dict[str, float]]) -> None:
    assert [entry.keys() for entry in first] == [entry.keys() for entry in second]
    for left, right in zip(first, second, strict=True):
        for key in left:
            assert left[key] == pytest.approx(right[key], rel=1e-4), (key, left, right)


@dataclass
class DistributedRun:
    result: TrainResult
    lines: list[str]
    forwarded: list[tuple[int, dict[str, float]]]
    epoch_log: Path


@pytest.fixture(scope="module")
def distributed_run(splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> DistributedRun:
    directory = tmp_path_factory.mktemp("ddp")
    lines: list[str] = []
    forwarded: list[tuple[int, dict[str, float]]] = []
    result = run_torchrun(
        splits,
        directory / "model",
        log=lines.append,
        epoch_log_path=str(directory / "epochs.jsonl"),
        on_epoch_end=lambda epoch, metrics: forwarded.append((epoch, metrics)),
    )
    return DistributedRun(result, lines, forwarded, directory / "epochs.jsonl")


@pytest.mark.parametrize(
    ("rows", "world_size"), [(12, 2), (11, 2), (10, 3), (7, 4), (2, 4), (1, 3)]
)
def test_shards_are_equal_and_together_cover_every_row_once_plus_padding(
    rows: int, world_size: int
) -> None:
    permutation = torch.randperm(rows, generator=torch.Generator().manual_seed(rows))
    shards = [shard_indices(permutation, rank, world_size) for rank in range(world_size)]

    per_rank = -(-rows // world_size)
    assert [len(shard) for shard in shards] == [per_rank] * world_size
    seen = torch.cat(shards).tolist()
    assert set(seen) == set(range(rows))
    # Only the padding repeats rows; with a multiple of world_size rows the shards are disjoint.
    assert len(seen) - len(set(seen)) == per_rank * world_size - rows


def test_one_step_of_all_shards_is_the_single_process_batch() -> None:
    permutation = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    world_size, per_rank_batch = 2, 3
    shards = [shard_indices(permutation, rank, world_size) for rank in range(world_size)]

    for step in range(24 // (world_size * per_rank_batch)):
        batch = slice(step * per_rank_batch, (step + 1) * per_rank_batch)
        together = sorted(torch.cat([shard[batch] for shard in shards]).tolist())
        global_batch = slice(step * 6, (step + 1) * 6)
        assert together == sorted(permutation[global_batch].tolist())


def test_shard_of_a_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        shard_indices(torch.arange(4), rank=2, world_size=2)


def test_ddp_run_learns_and_returns_a_working_model(
    distributed_run: DistributedRun, splits: Splits
) -> None:
    result = distributed_run.result

    probabilities = result.model.predict(splits.validation)
    assert probabilities.shape == (len(splits.validation),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    accuracy = float(((probabilities > 0.5) == splits.validation["label"].to_numpy()).mean())
    assert accuracy > 0.85
    assert (result.epochs_run, result.best_epoch, result.resumed_from_epoch) == (4, 4, None)
    assert result.device == "cpu"
    assert any("DistributedDataParallel over 2 processes" in line for line in distributed_run.lines)


def test_ddp_run_trains_exactly_like_one_process_with_the_same_global_batch(
    distributed_run: DistributedRun, splits: Splits
) -> None:
    single = train(splits.train, splits.validation, SCHEMA, "mlp", SMALL_MLP, CONFIG)

    assert_same_history(distributed_run.result.history, single.history)


def test_rank_zero_reports_each_epoch_once(distributed_run: DistributedRun) -> None:
    history = distributed_run.result.history
    logged = [json.loads(line) for line in distributed_run.epoch_log.read_text().splitlines()]

    assert logged == history
    assert distributed_run.forwarded == [(int(entry["epoch"]), entry) for entry in history]
    assert sum(line.startswith("epoch 1/") for line in distributed_run.lines) == 1


@dataclass
class ResumedRun:
    first: TrainResult
    resumed: TrainResult
    checkpoint_after_first: Path


@pytest.fixture(scope="module")
def resumed_run(splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> ResumedRun:
    directory = tmp_path_factory.mktemp("resume")
    checkpoints = directory / "checkpoints"
    first = run_torchrun(
        splits,
        directory / "first",
        config=replace(CONFIG, epochs=2),
        checkpoint_dir=str(checkpoints),
    )
    snapshot = directory / "checkpoint-after-first"
    shutil.copytree(checkpoints, snapshot)
    resumed = run_torchrun(splits, directory / "resumed", checkpoint_dir=str(checkpoints))
    return ResumedRun(first, resumed, snapshot)


def test_ddp_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(
    resumed_run: ResumedRun, distributed_run: DistributedRun
) -> None:
    assert resumed_run.first.epochs_run == 2
    assert resumed_run.resumed.resumed_from_epoch == 2
    assert resumed_run.resumed.epochs_run == 4
    assert resumed_run.resumed.history[:2] == resumed_run.first.history
    assert_same_history(resumed_run.resumed.history, distributed_run.result.history)


def test_checkpoint_of_another_process_count_is_not_resumed(
    resumed_run: ResumedRun, splits: Splits
) -> None:
    lines: list[str] = []

    result = train(
        splits.train,
        splits.validation,
        SCHEMA,
        "mlp",
        SMALL_MLP,
        replace(CONFIG, epochs=1),
        checkpoint_dir=resumed_run.checkpoint_after_first,
        log=lines.append,
    )

    assert result.resumed_from_epoch is None
    assert any("written by a run of 2 process(es) and this run has 1" in line for line in lines)


def test_failing_workers_surface_their_error(splits: Splits, tmp_path: Path) -> None:
    with pytest.raises(DistributedTrainingError, match="has no attribute 'Missing'") as raised:
        run_torchrun(splits, tmp_path / "model", architecture="tests.unit.custom_modules:Missing")

    assert isinstance(raised.value, RuntimeError)
    assert raised.value.error_type == "ModelArchitectureError"
    assert raised.value.rank in (0, 1)
    assert not (tmp_path / "model" / "model.json").exists()


def test_only_profiles_with_several_visible_gpus_are_distributed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)

    assert [should_distribute(count) for count in (0, 1, 2, 4, 8)] == [
        False,
        False,
        True,
        True,
        False,
    ]
    assert [nproc_for(count) for count in (0, 1, 4, 8)] == [1, 1, 4, 1]


def test_nothing_is_distributed_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert not should_distribute(2)
    assert nproc_for(2) == 1
