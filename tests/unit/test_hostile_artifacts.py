"""Hostile model artifacts are refused by the platform's own loaders, with no side effect.

A saved torch model is ``model.json`` plus ``model.safetensors``. Anyone who can write to the
artifact store can edit both, so the loaders (`TrainedModel.load` and `load_fitted`) must never
unpickle the weights, never import a module that ``model.json`` names unless the platform allows
it (``ML_PLATFORM_ALLOWED_ARCHITECTURES``), and must refuse weights that differ from those saved.
Architecture checks run in a fresh interpreter so that ``sys.modules`` shows what was imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ml_platform.training.config import TrainingConfig
from ml_platform.training.flavors.registry import get_flavor, load_fitted
from ml_platform.training.model import TrainedModel
from ml_platform.training.modules import ALLOWED_ARCHITECTURES_ENV
from ml_platform.training.schema import FeatureSchema

REPOSITORY = Path(__file__).resolve().parents[2]
SCHEMA = FeatureSchema(
    numeric=("amount", "age"),
    categorical=("channel",),
    label="label",
    task="binary_classification",
)
CONFIG = TrainingConfig(epochs=1, batch_size=128, device="cpu", seed=3)
TINY_NET = "tests.unit.custom_modules:TinyNet"
LOADERS: dict[str, Callable[[Path], object]] = {
    "load_fitted": load_fitted,
    "TrainedModel.load": TrainedModel.load,
}

# Runs loaders in a fresh interpreter: argv[1] is a JSON list of steps, each with the model
# directory, the loader, the value of the allow-list variable (or null) and modules to watch.
LOAD_SCRIPT = """
import json, os, sys
from ml_platform.training.flavors.registry import load_fitted
from ml_platform.training.model import TrainedModel
loaders = {"load_fitted": load_fitted, "TrainedModel.load": TrainedModel.load}
results = []
for step in json.loads(sys.argv[1]):
    os.environ.pop(step["variable"], None)
    if step["allowed"] is not None:
        os.environ[step["variable"]] = step["allowed"]
    before = {name for name in step["watch"] if name in sys.modules}
    try:
        model = loaders[step["loader"]](step["directory"])
        error, built = None, type(model.module).__name__
    except ValueError as exception:
        error, built = str(exception), None
    after = {name for name in step["watch"] if name in sys.modules}
    results.append({"error": error, "built": built, "newly_imported": sorted(after - before)})
print(json.dumps(results))
"""


class PlantedPickle:
    """Unpickling this creates ``marker``: the side effect a hostile weights file is after."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(0.0, 1.0, rows)
    return pd.DataFrame(
        {
            "amount": amount,
            "age": rng.normal(40.0, 10.0, rows),
            "channel": rng.choice(["web", "app"], rows),
            "label": (amount > 0).astype(int),
        }
    )


def fit_and_save(directory: Path, architecture: str, params: dict) -> Path:
    model = (
        get_flavor("torch")
        .fit(
            make_frame(300, seed=1),
            make_frame(100, seed=2),
            SCHEMA,
            params,
            CONFIG,
            architecture=architecture,
        )
        .model
    )
    model.save(directory)
    return directory


@pytest.fixture(scope="module")
def saved_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_and_save(tmp_path_factory.mktemp("mlp"), "mlp", {"hidden_sizes": [8]})


@pytest.fixture(scope="module")
def saved_tiny_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_and_save(tmp_path_factory.mktemp("tiny"), TINY_NET, {"hidden": 4})


@pytest.fixture
def model_copy(saved_mlp: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved_mlp, tmp_path / "model"))


def edit_metadata(directory: Path, **changes: object) -> None:
    path = directory / "model.json"
    metadata = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    path.write_text(json.dumps(metadata))


def run_loaders(steps: list[dict], python_path: Path | None = None) -> list[dict]:
    """Runs `LOAD_SCRIPT` on ``steps`` in a fresh interpreter and returns its results."""
    environment = {key: value for key, value in os.environ.items()}
    environment.pop(ALLOWED_ARCHITECTURES_ENV, None)
    if python_path is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(python_path), environment.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
    for step in steps:
        step.setdefault("variable", ALLOWED_ARCHITECTURES_ENV)
        step.setdefault("allowed", None)
        step.setdefault("watch", [])
        step["directory"] = str(step["directory"])
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, json.dumps(steps)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_planted_pickle_is_live_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    pickle.loads(pickle.dumps(PlantedPickle(marker)))

    assert marker.exists()


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("checksum", ["kept", "matches_the_pickle", "absent"])
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_planted_in_the_weights_is_refused_without_unpickling(
    model_copy: Path, tmp_path: Path, loader: str, checksum: str, writer: str
) -> None:
    marker = tmp_path / "marker"
    weights = model_copy / "model.safetensors"
    if writer == "pickle":
        weights.write_bytes(pickle.dumps({"layer.weight": PlantedPickle(marker)}))
    else:
        torch.save({"layer.weight": PlantedPickle(marker)}, weights)
    if checksum == "matches_the_pickle":
        edit_metadata(model_copy, weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    elif checksum == "absent":
        edit_metadata(model_copy, weights_sha256=None)
    expected = "were modified after saving" if checksum == "kept" else "is not a safetensors file"

    with pytest.raises(ValueError, match=expected):
        LOADERS[loader](model_copy)

    assert not marker.exists()


@pytest.mark.parametrize("architecture", ["this:Anything", "os:system", "hostile_module:Net"])
def test_an_architecture_the_platform_does_not_allow_is_refused_before_any_import(
    saved_mlp: Path, tmp_path: Path, architecture: str
) -> None:
    marker = tmp_path / "imported"
    hostile = tmp_path / "path"
    hostile.mkdir()
    (hostile / "hostile_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\nclass Net:\n    pass\n"
    )
    model = Path(shutil.copytree(saved_mlp, tmp_path / "model"))
    edit_metadata(model, architecture=architecture)
    watch = ["this", "hostile_module"]

    results = run_loaders(
        [{"directory": model, "loader": loader, "watch": watch} for loader in LOADERS],
        python_path=hostile,
    )

    for result in results:
        assert result["built"] is None
        assert f"names architecture '{architecture}', which this platform does not allow" in (
            result["error"] or ""
        )
        assert result["newly_imported"] == []
    assert not marker.exists()


@pytest.mark.parametrize("loader", LOADERS)
def test_a_tampered_checksum_is_refused(model_copy: Path, loader: str) -> None:
    edit_metadata(model_copy, weights_sha256="0" * 64)

    with pytest.raises(ValueError, match="records weights_sha256 '0000"):
        LOADERS[loader](model_copy)


@pytest.mark.parametrize("loader", LOADERS)
def test_modified_weights_are_refused(model_copy: Path, loader: str) -> None:
    weights = model_copy / "model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-1] ^= 0xFF  # the last byte belongs to the last tensor's data
    weights.write_bytes(bytes(content))

    with pytest.raises(ValueError, match="were modified after saving; refusing to load"):
        LOADERS[loader](model_copy)


def test_save_records_the_checksum_of_the_weights(saved_mlp: Path) -> None:
    metadata = json.loads((saved_mlp / "model.json").read_text())

    expected = hashlib.sha256((saved_mlp / "model.safetensors").read_bytes()).hexdigest()
    assert metadata["weights_sha256"] == expected
    assert metadata["flavor"] == "torch"


def test_a_model_saved_before_checksums_loads_with_a_warning(
    saved_mlp: Path, model_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edit_metadata(model_copy, weights_sha256=None)

    with caplog.at_level(logging.WARNING, logger="ml_platform.training.model"):
        loaded = load_fitted(model_copy)

    assert "has no weights_sha256 (saved before checksums existed)" in caplog.text
    rows = make_frame(20, seed=5)
    np.testing.assert_array_equal(loaded.predict(rows), load_fitted(saved_mlp).predict(rows))


def test_a_custom_architecture_loads_only_when_the_setting_allows_it(
    saved_tiny_net: Path,
) -> None:
    settings = [
        None,
        "",
        "tests.unit.custom",  # a prefix counts only at a module boundary
        "tests.unit.custom_modules:NotTinyNet",
        TINY_NET,
        "other.package, tests.unit.custom_modules",
        "tests",
    ]
    steps = [
        {"directory": saved_tiny_net, "loader": loader, "allowed": allowed}
        for allowed in settings
        for loader in LOADERS
    ]

    results = run_loaders(steps)

    built = [result["built"] for result in results]
    refusals = 4 * len(LOADERS)
    assert built == [None] * refusals + ["TinyNet"] * (len(results) - refusals)
    for result in results[:refusals]:
        assert "ML_PLATFORM_ALLOWED_ARCHITECTURES" in result["error"]
