"""Finds a flavor by name, or by the ``model.json`` of a saved model, importing it only then."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ml_platform.core.helpers import did_you_mean
from ml_platform.training.flavors.base import METADATA_FILENAME
from ml_platform.training.flavors.params import FLAVORS
from ml_platform.training.model_files import read_model_json

if TYPE_CHECKING:
    from ml_platform.training.flavors.base import FittedModel, Flavor

# Models saved before flavors existed have no "flavor" key: they are torch models.
LEGACY_FLAVOR = "torch"


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name``; its module (and torch or xgboost) is imported now.

    Args:
        name: One of `FLAVORS`: "torch" or "xgboost".

    Returns:
        The flavor.

    Raises:
        ValueError: No flavor has that name.
    """
    if name not in FLAVORS:
        raise ValueError(f"unknown model flavor '{name}' ({did_you_mean(name, FLAVORS)})")
    module = importlib.import_module(f"ml_platform.training.flavors.{name}")
    return module.FLAVOR


def load_fitted(directory: str | Path) -> FittedModel:
    """Loads a saved model of any flavor, without unpickling anything.

    Args:
        directory: Holds ``model.json``, whose "flavor" names the flavor (torch when absent).

    Returns:
        The fitted model.

    Raises:
        ValueError: ``model.json`` is missing or unreadable, or names an unknown flavor.
    """
    metadata = read_model_json(Path(directory) / METADATA_FILENAME)
    return get_flavor(str(metadata.get("flavor", LEGACY_FLAVOR))).load(directory)
