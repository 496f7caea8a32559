"""Run a feature repo's data generator (examples and synthetic data sets)."""

from __future__ import annotations

from collections.abc import Callable

from ml_platform.core.helpers import import_object
from ml_platform.core.settings import PlatformSettings
from ml_platform.spec.features import FeatureRepoSpec


def run_generator(repo: FeatureRepoSpec, settings: PlatformSettings) -> dict[str, int]:
    """Call ``generator.function(outputs, **params)`` with one parquet path per source.

    Args:
        repo: the feature repo; its ``generator`` names the function and its parameters.
        settings: the platform settings, to resolve the sources' paths.

    Returns:
        Rows written per source, as returned by the generator.

    Raises:
        ValueError: the repo declares no generator.
        ImportError: the generator function cannot be imported.
    """
    if repo.generator is None:
        raise ValueError(f"feature repo '{repo.name}' declares no generator")
    function: Callable[..., dict[str, int]] = import_object(
        repo.generator.function, "generator.function"
    )
    outputs = {source.name: settings.data_path(source.path) for source in repo.sources}
    return dict(function(outputs, **repo.generator.params))
