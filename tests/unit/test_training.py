"""Tests for the PyTorch trainer: learning, determinism, resume, saved models and clear errors."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ml_platform.training.config import TrainingConfig, resolve_device
from ml_platform.training.loop import train_arrays
from ml_platform.training.model import TrainedModel
from ml_platform.training.modules import build_module
from ml_platform.training.preprocessing import Preprocessor
from ml_platform.training.schema import FeatureSchema, ModelArchitectureError, TrainingDataError
from ml_platform.training.trainer import TrainResult, train

BINARY_SCHEMA = FeatureSchema(
    numeric=("amount", "age"), categorical=("channel",), label="label", task="binary_classification"
)
MULTICLASS_SCHEMA = FeatureSchema(
    numeric=("amount", "age"),
    categorical=("channel",),
    label="species",
    task="multiclass_classification",
)
REGRESSION_SCHEMA = FeatureSchema(
    numeric=("amount", "age"), categorical=("channel",), label="price", task="regression"
)
FAST = TrainingConfig(epochs=12, batch_size=64, learning_rate=1e-2, early_stopping_patience=0)
SMALL_MLP = {"hidden_sizes": [16]}
# Dropout draws from torch's global generator, so resume tests also prove its state is restored.
DROPOUT_MLP = {"hidden_sizes": [16], "dropout": 0.2}


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Features with a binary, a three-class and a real-valued label, all easy to learn."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(0.0, 1.0, rows)
    age = rng.normal(40.0, 10.0, rows)
    channel = rng.choice(["web", "app", "store"], rows)
    channel_effect = np.select([channel == "web", channel == "app"], [1.5, -1.5], 0.0)
    score = 2.0 * amount - (age - 40.0) / 10.0 + channel_effect
    species = np.select([score < -1.0, score < 1.0], ["cat", "dog"], "emu")
    return pd.DataFrame(
        {
            "amount": amount,
            "age": age,
            "channel": channel,
            "label": (score > 0).astype(int),
            "species": species,
            "price": 1000.0 + 50.0 * score,
        }
    )


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_frame(640, seed=1), make_frame(320, seed=2)


def state_dicts_equal(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    left, right = first.state_dict(), second.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def run(
    splits: tuple[pd.DataFrame, pd.DataFrame],
    schema: FeatureSchema = BINARY_SCHEMA,
    config: TrainingConfig = FAST,
    model_params: dict | None = None,
    **kwargs: object,
) -> TrainResult:
    train_frame, validation_frame = splits
    return train(
        train_frame,
        validation_frame,
        schema,
        "mlp",
        SMALL_MLP if model_params is None else model_params,
        config,
        **kwargs,  # type: ignore[arg-type]
    )


def test_binary_learns_a_separable_problem(splits: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    result = run(splits)
    validation = splits[1]

    probabilities = result.model.predict(validation)

    assert result.history[-1]["validation_accuracy"] > 0.9
    assert probabilities.shape == (len(validation),)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert ((probabilities > 0.5) == validation["label"].to_numpy()).mean() > 0.9
    assert result.device == str(resolve_device("auto"))
    assert result.epochs_run == len(result.history) == FAST.epochs
    assert result.samples_per_second > 0
    assert [entry["epoch"] for entry in result.history] == list(range(1, FAST.epochs + 1))


def test_multiclass_predicts_a_probability_per_sorted_class(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    result = run(splits, schema=MULTICLASS_SCHEMA)
    validation = splits[1]

    probabilities = result.model.predict(validation)

    assert result.model.preprocessor.classes == ["cat", "dog", "emu"]
    assert probabilities.shape == (len(validation), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    predicted = np.array(["cat", "dog", "emu"])[probabilities.argmax(axis=1)]
    assert (predicted == validation["species"].to_numpy()).mean() > 0.8
    assert "validation_accuracy" in result.history[-1]


def test_regression_predicts_in_the_label_units(splits: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    result = run(splits, schema=REGRESSION_SCHEMA)
    validation = splits[1]
    truth = validation["price"].to_numpy()

    predictions = result.model.predict(validation)

    assert predictions.shape == (len(validation),)
    # The target is standardized for training; predictions must come back around 1000, not 0.
    assert abs(predictions.mean() - truth.mean()) < 0.1 * truth.std()
    assert np.sqrt(np.mean((predictions - truth) ** 2)) < 0.3 * truth.std()
    assert "validation_accuracy" not in result.history[-1]


@pytest.mark.parametrize("schema", [BINARY_SCHEMA, MULTICLASS_SCHEMA, REGRESSION_SCHEMA])
def test_predict_on_no_rows_returns_an_empty_array(
    splits: tuple[pd.DataFrame, pd.DataFrame], schema: FeatureSchema
) -> None:
    result = run(splits, schema=schema, config=TrainingConfig(epochs=1, batch_size=256))

    predictions = result.model.predict(splits[1].iloc[:0])

    expected = (0, 3) if schema.task == "multiclass_classification" else (0,)
    assert predictions.shape == expected


def test_same_seed_gives_identical_weights(splits: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    config = TrainingConfig(epochs=3, batch_size=64)

    first = run(splits, config=config, model_params=DROPOUT_MLP)
    second = run(splits, config=config, model_params=DROPOUT_MLP)
    other_seed = run(
        splits, config=TrainingConfig(epochs=3, batch_size=64, seed=8), model_params=DROPOUT_MLP
    )

    assert state_dicts_equal(first.model.module, second.model.module)
    assert first.history == second.history
    assert not state_dicts_equal(first.model.module, other_seed.model.module)


class Interrupted(RuntimeError):
    pass


def interrupt_after(epoch: int) -> Callable[[int, dict[str, float]], None]:
    def on_epoch_end(current: int, metrics: dict[str, float]) -> None:
        if current > epoch:
            raise Interrupted(f"killed during epoch {current}")

    return on_epoch_end


@pytest.mark.parametrize("interruption", ["shorter_run", "exception_in_epoch_3"])
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path, interruption: str
) -> None:
    config = TrainingConfig(epochs=4, batch_size=64, early_stopping_patience=0)
    uninterrupted = run(splits, config=config, model_params=DROPOUT_MLP)

    if interruption == "shorter_run":
        run(
            splits,
            config=TrainingConfig(epochs=2, batch_size=64, early_stopping_patience=0),
            model_params=DROPOUT_MLP,
            checkpoint_dir=tmp_path,
        )
    else:
        with pytest.raises(Interrupted):
            run(
                splits,
                config=config,
                model_params=DROPOUT_MLP,
                checkpoint_dir=tmp_path,
                on_epoch_end=interrupt_after(2),
            )
    lines: list[str] = []
    resumed = run(
        splits, config=config, model_params=DROPOUT_MLP, checkpoint_dir=tmp_path, log=lines.append
    )

    assert resumed.resumed_from_epoch == 2
    assert "resuming from checkpoint at epoch 2" in lines
    assert resumed.history == uninterrupted.history
    assert resumed.epochs_run == 4
    assert state_dicts_equal(resumed.model.module, uninterrupted.model.module)


def test_rerun_of_a_finished_run_returns_its_model_without_training(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    config = TrainingConfig(epochs=2, batch_size=64)
    finished = run(splits, config=config, checkpoint_dir=tmp_path)
    lines: list[str] = []

    rerun = run(splits, config=config, checkpoint_dir=tmp_path, log=lines.append)

    assert rerun.resumed_from_epoch == 2
    assert rerun.samples_per_second == 0.0
    assert rerun.history == finished.history
    assert any("nothing left to train" in line for line in lines)
    assert state_dicts_equal(rerun.model.module, finished.model.module)


def test_checkpoint_of_a_different_run_is_not_resumed(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    run(splits, config=TrainingConfig(epochs=2, batch_size=64), checkpoint_dir=tmp_path)
    lines: list[str] = []

    result = run(
        splits,
        config=TrainingConfig(epochs=2, batch_size=64, learning_rate=5e-3),
        checkpoint_dir=tmp_path,
        log=lines.append,
    )

    assert result.resumed_from_epoch is None
    assert any("different run" in line and "learning_rate" in line for line in lines)


def test_checkpoint_loads_without_unpickling_objects(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    run(splits, config=TrainingConfig(epochs=2, batch_size=64), checkpoint_dir=tmp_path)

    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)

    assert checkpoint["epoch"] == 2
    assert len(checkpoint["history"]) == 2
    assert set(checkpoint["model"]) == set(checkpoint["best_state"])
    assert [path.name for path in tmp_path.iterdir()] == ["last.pt"]


def test_on_epoch_end_receives_each_epochs_metrics_once(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    calls: list[tuple[int, dict[str, float]]] = []

    result = run(
        splits,
        config=TrainingConfig(epochs=3, batch_size=64),
        on_epoch_end=lambda epoch, metrics: calls.append((epoch, metrics)),
    )

    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    assert [metrics for _, metrics in calls] == result.history


def test_early_stopping_returns_the_best_epochs_weights(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train_frame, validation_frame = splits
    # Flipped validation labels: the better the model learns, the worse validation gets.
    flipped = validation_frame.assign(label=1 - validation_frame["label"])
    config = TrainingConfig(epochs=12, batch_size=64, learning_rate=1e-2, early_stopping_patience=2)

    result = train(train_frame, flipped, BINARY_SCHEMA, "mlp", SMALL_MLP, config)

    losses = [entry["validation_loss"] for entry in result.history]
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 2 < config.epochs
    assert result.best_epoch == int(np.argmin(losses)) + 1
    probabilities = np.clip(result.model.predict(flipped), 1e-7, 1 - 1e-7)
    labels = flipped["label"].to_numpy()
    loss = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    assert loss == pytest.approx(min(losses), rel=1e-4)


def test_positive_class_weight_raises_predicted_probabilities(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    config = TrainingConfig(epochs=6, batch_size=64, learning_rate=1e-2)
    weighted_config = dataclasses.replace(config, positive_class_weight=8.0)

    plain = run(splits, config=config).model.predict(splits[1])
    weighted = run(splits, config=weighted_config).model.predict(splits[1])

    assert weighted.mean() > plain.mean() + 0.1


def test_saved_model_loads_without_pickle_and_predicts_the_same(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(splits, schema=MULTICLASS_SCHEMA, config=TrainingConfig(epochs=2, batch_size=64))
    validation = splits[1]
    result.model.save(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a saved model must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = TrainedModel.load(tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    metadata = json.loads((tmp_path / "model.json").read_text())
    assert metadata["architecture"] == "mlp"
    assert metadata["schema"] == MULTICLASS_SCHEMA.to_dict()
    assert set(load_file(tmp_path / "model.safetensors")) == set(result.model.module.state_dict())
    assert loaded.preprocessor.classes == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(loaded.predict(validation), result.model.predict(validation))


def test_preprocessor_statistics_come_from_the_train_split_only(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train_frame, validation_frame = splits
    shifted = validation_frame.assign(amount=validation_frame["amount"] + 1000.0)

    result = train(train_frame, shifted, BINARY_SCHEMA, "mlp", SMALL_MLP, TrainingConfig(epochs=1))

    preprocessor = result.model.preprocessor
    assert preprocessor.numeric_mean[0] == pytest.approx(train_frame["amount"].mean())
    assert preprocessor.numeric_std[0] == pytest.approx(train_frame["amount"].std(ddof=0))
    assert preprocessor.transform(shifted)[:, 0].mean() > 100


def test_preprocessor_encodes_unseen_missing_and_non_finite_values_as_zeros() -> None:
    schema = FeatureSchema(
        numeric=("amount", "constant"),
        categorical=("channel",),
        label="label",
        task="binary_classification",
    )
    fitted_on = pd.DataFrame(
        {
            "amount": [1.0, 3.0, np.nan],
            "constant": [5.0, 5.0, 5.0],
            "channel": ["web", "app", None],
            "label": [0, 1, 1],
        }
    )
    preprocessor = Preprocessor.fit(fitted_on, schema)
    incoming = pd.DataFrame(
        {
            "amount": [3.0, np.inf, None],
            "constant": [5.0, 6.0, 5.0],
            "channel": ["web", "fax", None],
        }
    )

    encoded = preprocessor.transform(incoming)

    assert preprocessor.feature_names == ["amount", "constant", "channel=app", "channel=web"]
    assert encoded.dtype == np.float32
    np.testing.assert_array_equal(
        encoded,
        [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    )


def test_preprocessor_round_trips_through_json(splits: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train_frame, validation_frame = splits
    for schema in (BINARY_SCHEMA, MULTICLASS_SCHEMA, REGRESSION_SCHEMA):
        preprocessor = Preprocessor.fit(train_frame, schema)

        restored = Preprocessor.from_dict(json.loads(json.dumps(preprocessor.to_dict())))

        np.testing.assert_array_equal(
            restored.transform(validation_frame), preprocessor.transform(validation_frame)
        )
        np.testing.assert_array_equal(
            restored.encode_labels(validation_frame), preprocessor.encode_labels(validation_frame)
        )


def test_prediction_tolerates_unseen_categories(splits: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    result = run(splits, config=TrainingConfig(epochs=1))
    incoming = splits[1].head(4).assign(channel=["fax", None, "web", "pigeon"])

    probabilities = result.model.predict(incoming.drop(columns=["label"]))

    assert probabilities.shape == (4,)
    assert np.isfinite(probabilities).all()


def test_custom_architecture_by_import_path_trains_saves_and_loads(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train_frame, validation_frame = splits
    result = train(
        train_frame,
        validation_frame,
        BINARY_SCHEMA,
        "tests.unit.custom_modules:TinyNet",
        {"hidden": 4},
        TrainingConfig(epochs=2, batch_size=64),
    )
    result.model.save(tmp_path)

    loaded = TrainedModel.load(tmp_path)

    assert type(loaded.module).__name__ == "TinyNet"
    assert loaded.model_params == {"hidden": 4}
    np.testing.assert_array_equal(
        loaded.predict(validation_frame), result.model.predict(validation_frame)
    )


def test_train_arrays_trains_on_plain_arrays() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(512, 6)).astype(np.float32)
    labels = (features @ rng.normal(size=6) > 0).astype(np.float32)
    module = build_module("mlp", 6, 1, SMALL_MLP)

    result = train_arrays(
        features[:384],
        labels[:384],
        torch.from_numpy(features[384:]),
        torch.from_numpy(labels[384:]),
        "binary_classification",
        module,
        FAST,
    )

    assert result.history[-1]["validation_accuracy"] > 0.85
    assert result.module is module
    assert not module.training


def test_failed_compile_falls_back_to_eager_training(
    splits: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_compile(module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def compiled(features: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no C++ compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    lines: list[str] = []

    result = run(splits, config=TrainingConfig(epochs=2, compile=True), log=lines.append)

    assert result.epochs_run == 2
    assert any("torch.compile failed" in line and "no C++ compiler" in line for line in lines)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda frame: frame.drop(columns=["age"]), r"train split is missing columns \['age'\]"),
        (lambda frame: frame.iloc[:0], r"train split is empty"),
        (lambda frame: frame.assign(label=1), r"'label' has a single class \[1\] in the train"),
        (
            lambda frame: frame.assign(label=frame["label"].where(frame.index != 5)),
            r"'label' has 1 missing or non-finite values in the train split \(first at index 5\)",
        ),
        (lambda frame: frame.assign(label=frame["label"] * 2), r"must hold 0 or 1.*\[2\.0\]"),
        (
            lambda frame: frame.assign(amount="a lot"),
            r"numeric column 'amount' in the train split has non-numeric values",
        ),
    ],
    ids=["missing_column", "empty", "single_class", "nan_label", "label_not_0_1", "text_number"],
)
def test_unusable_training_data_is_refused_before_training(
    splits: tuple[pd.DataFrame, pd.DataFrame],
    change: Callable[[pd.DataFrame], pd.DataFrame],
    message: str,
) -> None:
    train_frame, validation_frame = splits
    epochs: list[int] = []

    with pytest.raises(TrainingDataError, match=message):
        train(
            change(train_frame),
            validation_frame,
            BINARY_SCHEMA,
            "mlp",
            SMALL_MLP,
            FAST,
            on_epoch_end=lambda epoch, _: epochs.append(epoch),
        )
    assert epochs == []


def test_validation_classes_unseen_in_training_are_refused(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train_frame, validation_frame = splits
    validation_frame = validation_frame.assign(species="yak")

    with pytest.raises(TrainingDataError, match=r"validation split has classes \['yak'\]"):
        train(train_frame, validation_frame, MULTICLASS_SCHEMA, "mlp", SMALL_MLP, FAST)


@pytest.mark.parametrize(
    ("architecture", "params", "message"),
    [
        (
            "foo.bar:Baz",
            {},
            r"model.architecture 'foo.bar:Baz': module 'foo.bar' could not be imported "
            r"\(No module named 'foo'\); use 'mlp' or 'package.module:ClassName'",
        ),
        ("transformer", {}, r"'transformer' is neither 'mlp' nor an import path"),
        ("tests.unit.custom_modules:Missing", {}, r"has no attribute 'Missing'"),
        ("tests.unit.custom_modules:NotAModule", {}, r"is not a torch.nn.Module subclass"),
        (
            "tests.unit.custom_modules:TinyNet",
            {"depth": 3},
            r"TinyNet\(input_dim=5, output_dim=1, \*\*params\) failed with TypeError.*"
            r"params passed: \{'depth': 3\}",
        ),
        ("mlp", {"hiden_sizes": [8]}, r"accept \['hidden_sizes', 'dropout', 'activation'\]"),
        ("mlp", {"activation": "tanh"}, r"activation must be 'relu' or 'gelu'"),
    ],
    ids=["unimportable", "not_a_path", "no_class", "not_a_module", "bad_params", "typo", "act"],
)
def test_unusable_architecture_is_refused_with_a_clear_error(
    splits: tuple[pd.DataFrame, pd.DataFrame], architecture: str, params: dict, message: str
) -> None:
    train_frame, validation_frame = splits

    with pytest.raises(ModelArchitectureError, match=message):
        train(train_frame, validation_frame, BINARY_SCHEMA, architecture, params, FAST)


@pytest.mark.parametrize(
    "settings",
    [{"precision": "fp8"}, {"epochs": 0}, {"device": "tpu"}, {"positive_class_weight": -1.0}],
)
def test_invalid_training_config_is_refused(settings: dict) -> None:
    with pytest.raises(ValueError, match=f"TrainingConfig: {next(iter(settings))}"):
        TrainingConfig(**settings)


def test_module_imports_without_pandas_or_dagster() -> None:
    code = (
        "import sys, ml_platform.training.trainer, ml_platform.training.distributed; "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'dagster') if m in sys.modules))"
    )

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )

    assert completed.stdout.strip() == "[]"
