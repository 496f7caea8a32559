"""Run a feature repo's data generator (examples and synthetic data sets)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ml_platform.settings import PlatformSettings
from ml_platform.spec import FeatureRepoSpec


def import_object(path: str, what: str) -> Any:
    """Import ``package.module:name``; the error says which part failed and how to fix it."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"{what} '{path}': module '{module_name}' could not be imported ({exc}); "
            "check the module path and that its package is installed"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"{what} '{path}': module '{module_name}' has no '{attribute}'") from None


def run_generator(repo: FeatureRepoSpec, settings: PlatformSettings) -> dict[str, int]:
    """Call ``generator.function(outputs, **params)`` with one parquet path per source.

    Returns:
        Rows written per source, as returned by the generator.
    """
    if repo.generator is None:
        raise ValueError(f"feature repo '{repo.name}' declares no generator")
    function: Callable[..., dict[str, int]] = import_object(
        repo.generator.function, "generator.function"
    )
    outputs = {source.name: settings.data_path(source.path) for source in repo.sources}
    return dict(function(outputs, **repo.generator.params))
