"""Tests for the model flavors: XGBoost learns, saves without pickle and resumes; params errors."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_platform.training.config import TrainingConfig
from ml_platform.training.flavors.base import FitResult, FittedModel
from ml_platform.training.flavors.params import FLAVORS, validate_params
from ml_platform.training.flavors.registry import get_flavor, load_fitted
from ml_platform.training.flavors.torch import TorchModel
from ml_platform.training.flavors.xgboost import XGBoostFlavor, XGBoostModel
from ml_platform.training.flavors.xgboost_rounds import (
    CHECKPOINT_FILENAME,
    RoundProgress,
    RoundTracker,
)
from ml_platform.training.schema import (
    FeatureSchema,
    ModelArchitectureError,
    TrainingDivergedError,
)

FEATURES = {"numeric": ("amount", "age"), "categorical": ("channel",)}
SCHEMAS = {
    "binary_classification": FeatureSchema(**FEATURES, label="label", task="binary_classification"),
    "multiclass_classification": FeatureSchema(
        **FEATURES, label="species", task="multiclass_classification"
    ),
    "regression": FeatureSchema(**FEATURES, label="price", task="regression"),
}
CPU = TrainingConfig(device="cpu", early_stopping_patience=5, seed=11)
# No row or column subsampling: XGBoost cannot restore its sampler's random state, so only
# deterministic trees let a resumed fit equal an uninterrupted one exactly.
FEW_ROUNDS = {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.3}


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Features with a binary, a three-class and a real-valued label that trees learn easily."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(0.0, 1.0, rows)
    age = rng.normal(40.0, 10.0, rows)
    channel = rng.choice(["web", "app", "store"], rows)
    score = 2.0 * amount - (age - 40.0) / 10.0 + np.where(channel == "store", 1.5, 0.0)
    noisy = score + rng.normal(0.0, 0.2, rows)
    return pd.DataFrame(
        {
            "amount": amount,
            "age": age,
            "channel": channel,
            "label": (noisy > 0).astype(int),
            "species": np.select([noisy < -1.0, noisy < 1.0], ["cat", "dog"], "emu"),
            "price": 1000.0 + 50.0 * score + rng.normal(0.0, 5.0, rows),
        }
    )


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_frame(1200, seed=1), make_frame(400, seed=2)


@pytest.fixture(scope="module")
def test_rows() -> pd.DataFrame:
    return make_frame(400, seed=3)


def fit_xgboost(
    splits: tuple[pd.DataFrame, pd.DataFrame],
    task: str = "binary_classification",
    params: dict | None = None,
    **options,
) -> FitResult:
    train, validation = splits
    flavor = XGBoostFlavor(checkpoint_every=options.pop("checkpoint_every", 10))
    config = options.pop("config", CPU)
    return flavor.fit(
        train, validation, SCHEMAS[task], dict(params or FEW_ROUNDS), config, **options
    )


@pytest.mark.parametrize("task", list(SCHEMAS))
def test_xgboost_learns_each_task(
    splits: tuple[pd.DataFrame, pd.DataFrame], test_rows: pd.DataFrame, task: str
) -> None:
    result = fit_xgboost(splits, task)
    model = result.model
    predictions = model.predict(test_rows)
    truth = model.encode_labels(test_rows)
    assert isinstance(model, FittedModel) and model.flavor == "xgboost"
    if task == "binary_classification":
        assert predictions.shape == (len(test_rows),)
        assert ((predictions >= 0) & (predictions <= 1)).all()
        assert np.mean((predictions > 0.5) == truth) > 0.9  # chance is about 0.5
    elif task == "multiclass_classification":
        assert predictions.shape == (len(test_rows), 3)
        np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)
        assert np.mean(predictions.argmax(axis=1) == truth) > 0.85  # chance is about 0.33
        assert set(truth) == {0, 1, 2}
    else:
        residual = np.sum((truth - predictions) ** 2)
        r2 = 1.0 - residual / np.sum((truth - truth.mean()) ** 2)
        assert r2 > 0.9, r2
        assert abs(predictions.mean() - 1000.0) < 30.0  # in the label's units
    history = result.history
    assert len(history) == result.epochs_run and result.epochs_run <= 40
    assert [row["epoch"] for row in history] == list(range(1, result.epochs_run + 1))
    best = min(history, key=lambda row: row["validation_loss"])
    assert result.best_epoch == best["epoch"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert ("validation_accuracy" in history[0]) == (task != "regression")
    assert result.resumed_from_epoch is None and result.device == "cpu"


def test_rounds_are_reported_and_early_stopping_uses_the_config_patience(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reported: list[tuple[int, dict[str, float]]] = []
    lines: list[str] = []
    config = TrainingConfig(device="cpu", early_stopping_patience=2)
    result = fit_xgboost(
        splits,
        params={"n_estimators": 500, "learning_rate": 0.5},
        config=config,
        on_epoch_end=lambda epoch, metrics: reported.append((epoch, metrics)),
        log=lines.append,
    )
    assert result.stopped_early and result.epochs_run < 500
    assert result.epochs_run == result.best_epoch + 2
    assert [epoch for epoch, _ in reported] == list(range(1, result.epochs_run + 1))
    assert [metrics for _, metrics in reported] == result.history
    assert any("early stopping after round" in line for line in lines)
    # The model predicts with the best round, not the last.
    model = result.model
    assert isinstance(model, XGBoostModel)
    assert model.best_iteration == result.best_epoch - 1
    assert model.booster.num_boosted_rounds() == result.epochs_run


def test_explicit_early_stopping_rounds_win_over_the_config(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    result = fit_xgboost(splits, params={"n_estimators": 30, "early_stopping_rounds": 0})
    assert result.epochs_run == 30 and not result.stopped_early


def test_saved_model_has_no_pickle_and_loads_without_unpickling(
    splits: tuple[pd.DataFrame, pd.DataFrame],
    test_rows: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = fit_xgboost(splits, "multiclass_classification").model
    assert isinstance(model, XGBoostModel)
    expected = model.predict(test_rows)
    model.save(tmp_path / "model")

    files = {path.name: path.read_bytes() for path in (tmp_path / "model").iterdir()}
    assert set(files) == {"model.json", "model.ubj"}
    for data in files.values():
        assert not data.startswith(pickle.PROTO), "a pickle stream starts with PROTO"
        assert b"\x80\x04\x95" not in data and b"\x80\x05\x95" not in data  # PROTO 4/5 + FRAME
    assert files["model.ubj"].startswith(b"{")  # UBJSON object
    metadata = json.loads(files["model.json"])
    assert metadata["flavor"] == "xgboost"
    assert metadata["best_iteration"] == model.best_iteration
    assert metadata["booster_params"]["objective"] == "multi:softprob"
    assert metadata["preprocessor"]["classes"] == ["cat", "dog", "emu"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a saved model must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = load_fitted(tmp_path / "model")
    assert isinstance(loaded, XGBoostModel)
    np.testing.assert_array_equal(loaded.predict(test_rows), expected)
    np.testing.assert_array_equal(loaded.encode_labels(test_rows), model.encode_labels(test_rows))
    assert loaded.schema == model.schema


def test_prediction_on_no_rows_has_the_task_shape(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    model = fit_xgboost(splits, "multiclass_classification").model
    assert model.predict(splits[1].iloc[:0]).shape == (0, 3)


def crash_at(round_number: int) -> Callable[[int, dict[str, float]], None]:
    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == round_number:
            raise KeyboardInterrupt(f"killed at round {epoch}")

    return on_epoch_end


@pytest.mark.parametrize("task", ["binary_classification", "regression"])
def test_an_interrupted_fit_resumes_from_its_checkpoint(
    splits: tuple[pd.DataFrame, pd.DataFrame], test_rows: pd.DataFrame, tmp_path: Path, task: str
) -> None:
    params = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.2}
    uninterrupted = fit_xgboost(splits, task, params)
    checkpoint_dir = tmp_path / "checkpoints"
    with pytest.raises(KeyboardInterrupt):
        fit_xgboost(
            splits,
            task,
            params,
            checkpoint_every=5,
            checkpoint_dir=checkpoint_dir,
            on_epoch_end=crash_at(13),
        )
    assert (checkpoint_dir / CHECKPOINT_FILENAME).exists()

    lines: list[str] = []
    resumed = fit_xgboost(
        splits, task, params, checkpoint_every=5, checkpoint_dir=checkpoint_dir, log=lines.append
    )
    assert resumed.resumed_from_epoch == 10, lines
    assert "resuming from checkpoint at round 10" in lines
    assert resumed.epochs_run == uninterrupted.epochs_run
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert resumed.stopped_early == uninterrupted.stopped_early
    for got, want in zip(resumed.history, uninterrupted.history, strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(
        resumed.model.predict(test_rows), uninterrupted.model.predict(test_rows), rtol=1e-6
    )


def test_a_finished_checkpoint_is_not_trained_again(
    splits: tuple[pd.DataFrame, pd.DataFrame], test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    first = fit_xgboost(splits, checkpoint_dir=tmp_path)
    lines: list[str] = []
    again = fit_xgboost(splits, checkpoint_dir=tmp_path, log=lines.append)
    assert again.resumed_from_epoch == first.epochs_run
    assert any("nothing to train" in line for line in lines)
    assert again.history == first.history and again.best_epoch == first.best_epoch
    np.testing.assert_array_equal(again.model.predict(test_rows), first.model.predict(test_rows))


def test_a_checkpoint_of_other_data_or_params_is_not_resumed(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    with pytest.raises(KeyboardInterrupt):
        fit_xgboost(splits, checkpoint_every=2, checkpoint_dir=tmp_path, on_epoch_end=crash_at(5))
    train, validation = splits
    changed = train.assign(amount=train["amount"].to_numpy()[::-1])
    lines: list[str] = []
    result = fit_xgboost((changed, validation), checkpoint_dir=tmp_path, log=lines.append)
    assert result.resumed_from_epoch is None
    assert any("belongs to a different run" in line and "x_train_digest" in line for line in lines)

    lines.clear()
    other = fit_xgboost(
        splits, params={**FEW_ROUNDS, "max_depth": 4}, checkpoint_dir=tmp_path, log=lines.append
    )
    assert other.resumed_from_epoch is None
    assert any("max_depth" in line for line in lines)


def test_a_non_finite_validation_loss_raises_diverged() -> None:
    import xgboost

    tracker = RoundTracker(
        progress=RoundProgress(),
        metrics=("rmse",),
        patience=3,
        total_rounds=10,
        log=lambda line: None,
        on_epoch_end=None,
        checkpoint=None,
        checkpoint_every=10,
    )
    good = {"train": {"rmse": [1.0]}, "validation": {"rmse": [1.5]}}
    assert tracker.after_round(xgboost.Booster(), good) is False
    bad = {"train": {"rmse": [1.0, 0.9]}, "validation": {"rmse": [1.5, math.nan]}}
    with pytest.raises(TrainingDivergedError, match="validation loss is nan at round 2"):
        tracker.after_round(xgboost.Booster(), bad)


def test_invalid_xgboost_params_give_precise_messages(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    with pytest.raises(ModelArchitectureError) as raised:
        fit_xgboost(splits, params={"max_dept": 3, "learning_rate": 2.0})
    message = str(raised.value)
    assert (
        "model.params.max_dept: not a parameter of flavor 'xgboost' (did you mean 'max_depth'?)"
        in message
    )
    assert "model.params.learning_rate: Input should be less than or equal to 1 (got 2.0)" in (
        message
    )
    with pytest.raises(ModelArchitectureError, match="scale_pos_weight: applies to binary"):
        fit_xgboost(splits, "regression", params={"scale_pos_weight": 3.0})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"n_estimators": True}, "model.params.n_estimators: Input should be a valid integer"),
        ({"tree_method": "exact"}, "model.params.tree_method: Input should be 'hist' or 'approx'"),
        ({"subsample": 0}, "model.params.subsample: Input should be greater than 0 (got 0)"),
        ({"eta": 0.1}, "model.params.eta: not a parameter of flavor 'xgboost' (known parameters:"),
    ],
)
def test_validate_params_for_xgboost(params: dict, expected: str) -> None:
    problems = validate_params("xgboost", "mlp", params)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_validate_params_for_the_torch_mlp_suggests_the_known_name() -> None:
    assert validate_params("torch", "mlp", {"hidden_sizes": [32, 16], "dropout": 0.1}) == []
    assert validate_params("torch", "mlp", {"hiden_sizes": [32]}) == [
        "model.params.hiden_sizes: not a parameter of flavor 'torch' (architecture 'mlp') "
        "(did you mean 'hidden_sizes'?)"
    ]
    assert validate_params("torch", "mlp", {"hidden_sizes": [32, 0], "activation": "tanh"}) == [
        "model.params.hidden_sizes[1]: Input should be greater than 0 (got 0)",
        "model.params.activation: Input should be 'relu' or 'gelu' (got 'tanh')",
    ]


def test_validate_params_for_a_custom_torch_module() -> None:
    assert validate_params("torch", "my_models.nets:Net", {"width": 8, "blocks": [1, 2]}) == []
    assert validate_params("torch", "my_models.nets:Net", {"input_dim": 8}) == [
        "model.params.input_dim: set by the trainer from the data (remove it)"
    ]
    problems = validate_params("torch", "my_models.nets:Net", {"width": {1, 2}})
    assert len(problems) == 1 and problems[0].startswith("model.params: must be JSON-serializable")
    assert validate_params("xgbost", "mlp", {}) == [
        "model.flavor: unknown flavor 'xgbost' (did you mean 'xgboost'?)"
    ]


def test_the_params_module_imports_neither_torch_nor_xgboost() -> None:
    code = (
        "import sys\n"
        "import ml_platform.training.flavors.params\n"
        "import ml_platform.training.flavors.registry\n"
        "print(sorted(m for m in ('torch', 'xgboost', 'pandas') if m in sys.modules))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_registry_names_every_flavor_and_suggests_on_a_typo() -> None:
    assert [get_flavor(name).name for name in FLAVORS] == ["torch", "xgboost"]
    with pytest.raises(ValueError, match=r"unknown model flavor 'xgb' \(did you mean"):
        get_flavor("xgb")


def test_torch_flavor_fits_saves_with_its_flavor_and_loads_through_the_registry(
    splits: tuple[pd.DataFrame, pd.DataFrame], test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    train, validation = splits
    config = TrainingConfig(epochs=3, batch_size=128, learning_rate=1e-2, device="cpu")
    schema = SCHEMAS["multiclass_classification"]
    result = get_flavor("torch").fit(
        train, validation, schema, {"hidden_sizes": [16]}, config, architecture="mlp"
    )
    model = result.model
    assert isinstance(model, TorchModel) and isinstance(model, FittedModel)
    assert model.flavor == "torch" and result.epochs_run == 3
    np.testing.assert_array_equal(
        model.encode_labels(test_rows), model.preprocessor.encode_labels(test_rows)
    )
    model.save(tmp_path / "torch")
    assert json.loads((tmp_path / "torch" / "model.json").read_text())["flavor"] == "torch"
    loaded = load_fitted(tmp_path / "torch")
    assert isinstance(loaded, TorchModel)
    np.testing.assert_array_equal(loaded.predict(test_rows), model.predict(test_rows))


def test_a_model_saved_before_flavors_loads_as_torch(
    splits: tuple[pd.DataFrame, pd.DataFrame], test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    train, validation = splits
    config = TrainingConfig(epochs=1, batch_size=128, device="cpu")
    schema = SCHEMAS["binary_classification"]
    model = get_flavor("torch").fit(train, validation, schema, {"hidden_sizes": [8]}, config).model
    assert isinstance(model, TorchModel)
    super(TorchModel, model).save(tmp_path / "legacy")  # TrainedModel.save: no "flavor" key
    assert "flavor" not in json.loads((tmp_path / "legacy" / "model.json").read_text())
    loaded = load_fitted(tmp_path / "legacy")
    assert loaded.flavor == "torch"
    np.testing.assert_array_equal(loaded.predict(test_rows), model.predict(test_rows))


def test_torch_flavor_rejects_unknown_mlp_params_before_training(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, validation = splits
    with pytest.raises(ModelArchitectureError, match="did you mean 'dropout'"):
        get_flavor("torch").fit(train, validation, SCHEMAS["regression"], {"dropuot": 0.1}, CPU)


def test_cuda_asked_for_without_a_gpu_is_an_error(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit_xgboost(splits, config=TrainingConfig(device="cuda"))


def test_a_gpu_that_this_xgboost_build_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import xgboost

    from ml_platform.training import config as config_module
    from ml_platform.training.flavors.xgboost import resolve_xgboost_device

    if xgboost.build_info().get("USE_CUDA"):
        pytest.skip("this xgboost is built with CUDA")
    # The compute profile has a GPU: the config resolves to it, as on a GPU node.
    monkeypatch.setattr(config_module, "resolve_device", lambda device: torch.device("cuda", 0))
    lines: list[str] = []
    assert resolve_xgboost_device(TrainingConfig(device="auto"), lines.append) == "cpu"
    assert "training on the CPU" in lines[0] and "xgboost-cpu" in lines[0]
    with pytest.raises(ValueError, match="install the `xgboost` package on GPU images"):
        resolve_xgboost_device(TrainingConfig(device="cuda"), lines.append)
    assert resolve_xgboost_device(TrainingConfig(device="cpu"), lines.append) == "cpu"
