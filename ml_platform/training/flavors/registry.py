"""Finds a flavor by name, or by the ``model.json`` of a saved model, importing it only then."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ml_platform.core.helpers import did_you_mean
from ml_platform.training.flavors.base import METADATA_FILENAME
from ml_platform.training.flavors.params import FLAVORS

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
    metadata_path = Path(directory) / METADATA_FILENAME
    if not metadata_path.exists():
        raise ValueError(f"{metadata_path} does not exist; was the model saved by a flavor?")
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{metadata_path} could not be read: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError(f"{metadata_path} holds {type(metadata).__name__}, not an object")
    return get_flavor(str(metadata.get("flavor", LEGACY_FLAVOR))).load(directory)
