"""Where links point: the MLflow UI Dagster links to, and the Dagster UI MLflow links to."""

from __future__ import annotations

import os

from ml_platform.core.helpers import redact_url

MLFLOW_UI_URL_ENV = "ML_PLATFORM_MLFLOW_UI_URL"
LEGACY_MLFLOW_UI_URL_ENV = "MLFLOW_UI_URL"  # read too: deployments set it before the above existed
DEFAULT_UI_URL = "http://127.0.0.1:5000"  # where `make mlflow` serves the UI
DAGSTER_UI_URL_ENV = "DAGSTER_UI_URL"
DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"  # where `make dev` serves the Dagster UI


def mlflow_ui_url(configured: str = "", tracking_uri: str = "") -> str:
    """The base URL of the MLflow UI that links point at, without credentials.

    Args:
        configured: An explicit URL (``ModelRegistryResource.ui_url``); empty to look further.
        tracking_uri: The tracking URI: an MLflow server (``http(s)://``) serves its own UI.

    Returns:
        The first of: ``configured``, ``ML_PLATFORM_MLFLOW_UI_URL``, ``MLFLOW_UI_URL``, the
        tracking URI when it is an MLflow server, and ``http://127.0.0.1:5000`` (``make mlflow``),
        without user, password, query or fragment and without a trailing slash.
    """
    server = tracking_uri if tracking_uri.startswith(("http://", "https://")) else ""
    base = (
        configured
        or os.environ.get(MLFLOW_UI_URL_ENV)
        or os.environ.get(LEGACY_MLFLOW_UI_URL_ENV)
        or server
        or DEFAULT_UI_URL
    )
    # Links land in metadata, logs and tags: a URL's credentials stay out of them.
    return redact_url(base.strip()).rstrip("/")


def dagster_ui_url(configured: str = "") -> str:
    """The base URL of the Dagster UI that MLflow's ``dagster_run_url`` tags point at.

    Args:
        configured: An explicit URL; empty means ``DAGSTER_UI_URL``, else
            ``http://127.0.0.1:3000`` (``make dev``).

    Returns:
        The URL without credentials and without a trailing slash.
    """
    base = configured or os.environ.get(DAGSTER_UI_URL_ENV) or DEFAULT_DAGSTER_UI_URL
    return redact_url(base.strip()).rstrip("/")
