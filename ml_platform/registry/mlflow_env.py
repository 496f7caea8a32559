"""MLflow's process-global state and errors: URIs set and restored, requirements, messages.

MLflow's fluent API keeps its URIs in process globals and exports them to the environment, where
``PlatformSettings`` reads the user's own configuration: ``mlflow_uris`` sets them for one call and
restores both exactly. MLflow is imported inside the functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ml_platform.core.helpers import unknown

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

# The packages a version's serving environment needs, per flavor; pinned to the versions that
# wrote the model files. Every flavor also needs COMMON_PACKAGES.
FLAVOR_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "safetensors"),
    "xgboost": ("xgboost",),
}
COMMON_PACKAGES = ("pandas", "numpy")

# The environment variables MLflow's set_tracking_uri / set_registry_uri export.
_EXPORTED = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def mlflow_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``mlflow.pyfunc.log_model``) at a backend.

    On exit, MLflow's previous URIs (including "never set") and the ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_REGISTRY_URI`` environment variables are restored exactly: the environment is where
    ``PlatformSettings`` reads the user's own configuration, so a URI leaked there would become
    the next settings' backend.

    Args:
        tracking_uri: The MLflow tracking URI to use inside the block.
        registry_uri: The MLflow model registry URI to use inside the block.

    Yields:
        Nothing; the block runs with the URIs set.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    environment = {name: os.environ.get(name) for name in _EXPORTED}
    # The raw globals, not get_tracking_uri(): that resolves a default we must not pin.
    previous_tracking = tracking_utils._tracking_uri
    previous_registry = registry_utils._registry_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)  # pyright: ignore[reportArgumentType]
        registry_utils._registry_uri = previous_registry
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pip_requirements(flavor: str) -> list[str]:
    """The pip requirements of a model of ``flavor``, pinned to the installed versions.

    Args:
        flavor: The fitted model's flavor (``torch``, ``xgboost``).

    Returns:
        ``<package>==<version>`` for each of the flavor's packages (local version labels such as
        ``+cu121`` dropped), then the unpinned common packages.

    Raises:
        ValueError: ``flavor`` is not a known flavor.
    """
    from importlib.metadata import PackageNotFoundError, version

    if flavor not in FLAVOR_PACKAGES:
        raise ValueError(unknown("model flavor", flavor, FLAVOR_PACKAGES))
    requirements = []
    for package in FLAVOR_PACKAGES[flavor]:
        try:
            requirements.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            requirements.append(package)
    return [*requirements, *COMMON_PACKAGES]


class RegistryUnavailableError(RuntimeError):
    """MLflow failed to answer a question whose answer the platform cannot guess."""


# How MLflow reports a missing alias: its SQL and file stores raise INVALID_PARAMETER_VALUE with
# "Registered model alias <alias> not found." (3.x), a missing registered model is
# RESOURCE_DOES_NOT_EXIST; over REST the same codes and messages come back.
MISSING_ALIAS_PATTERN = re.compile(
    r"alias '?(?P<alias>[\w.-]+)'? (?:not found|does not exist)", re.I
)


def is_missing_alias(error: MlflowException, alias: str) -> bool:
    """Whether ``error`` says the model or its ``alias`` does not exist (and nothing else)."""
    if error.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    found = MISSING_ALIAS_PATTERN.search(error.message)
    return (
        error.error_code == "INVALID_PARAMETER_VALUE"
        and found is not None
        and found["alias"] == alias
    )
