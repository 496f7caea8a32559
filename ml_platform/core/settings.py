"""Where the platform keeps its state, decided in one place from the environment.

Locally everything lives under ``ML_PLATFORM_HOME`` (default ``./.ml_platform``): the Dagster
instance, the MLflow backend and artifacts, the Feast registry and online store, parquet data and
the audit log. Each location can point at a real engine instead (Postgres, an MLflow server, S3)
through environment variables or resource configuration, without code changes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

HOME_ENV = "ML_PLATFORM_HOME"
DEPLOYMENT_ENV = "ML_PLATFORM_DEPLOYMENT"
RETRY_DELAY_ENV = "ML_PLATFORM_RETRY_DELAY_SECONDS"
FEAST_OFFLINE_STORE_ENV = "ML_PLATFORM_FEAST_OFFLINE_STORE"
FEAST_ONLINE_STORE_ENV = "ML_PLATFORM_FEAST_ONLINE_STORE"
# The platform's Feast offline store: Feast's DuckDB store with point-in-time joins as DuckDB ASOF
# joins (ml_platform/features/offline_store.py). Named, not imported: Feast imports it.
ASOF_OFFLINE_STORE = "ml_platform.features.offline_store.AsofDuckDBOfflineStore"
Deployment = Literal["local", "k8s"]


def platform_home() -> Path:
    """The absolute local state directory (``ML_PLATFORM_HOME``, default ``./.ml_platform``)."""
    return Path(os.environ.get(HOME_ENV, ".ml_platform")).expanduser().resolve()


def deployment() -> Deployment:
    """The deployment the definitions are built for: ``local`` (default) or ``k8s``."""
    value = os.environ.get(DEPLOYMENT_ENV, "local").strip().lower()
    if value not in ("local", "k8s"):
        raise ValueError(f"{DEPLOYMENT_ENV}={value!r} is not a deployment; use 'local' or 'k8s'")
    return value  # type: ignore[return-value]


def retry_delay_seconds(default: float = 30.0) -> float:
    """Seconds between a failed training step and its retry.

    The default leaves a preempted node's replacement time to come up;
    ``ML_PLATFORM_RETRY_DELAY_SECONDS`` overrides it. It is read where the job is built, in the
    run worker that waits it.

    Args:
        default: The delay when the variable is unset or empty.

    Returns:
        The delay in seconds.

    Raises:
        ValueError: The variable is not a finite number of seconds >= 0.
    """
    value = os.environ.get(RETRY_DELAY_ENV, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{RETRY_DELAY_ENV} must be a number of seconds >= 0, got {value!r}")
    return seconds


def feast_offline_store() -> dict[str, Any]:
    """The Feast offline store config: ``ML_PLATFORM_FEAST_OFFLINE_STORE`` (JSON) or the default.

    Returns:
        A config with a ``type`` (Feast's name, or a module path ending in ``OfflineStore``)
        and the store's options; the platform's ASOF store when the variable is unset or empty.

    Raises:
        ValueError: The variable is not a JSON object with a string ``type``.
    """
    return _store_config(FEAST_OFFLINE_STORE_ENV, {"type": ASOF_OFFLINE_STORE}, "duckdb")


def feast_online_store(home: Path) -> dict[str, Any]:
    """The Feast online store config: ``ML_PLATFORM_FEAST_ONLINE_STORE`` (JSON) or SQLite.

    In production the materialization steps and the prediction services run in different pods,
    so they need a shared online store, e.g.
    ``{"type": "redis", "connection_string": "redis:6379,password=..."}`` (from a Secret).

    Args:
        home: the platform home; the default SQLite store is ``<home>/feast/online.db``.

    Returns:
        A config with a ``type`` and the store's options.

    Raises:
        ValueError: The variable is not a JSON object with a string ``type``.
    """
    default = {"type": "sqlite", "path": str(home / "feast" / "online.db")}
    return _store_config(FEAST_ONLINE_STORE_ENV, default, "redis")


def _store_config(variable: str, default: dict[str, Any], example: str) -> dict[str, Any]:
    """A store config read as JSON from ``variable``, else ``default``."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    try:
        config = json.loads(value)
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        # The value may hold a password: it is not repeated.
        raise ValueError(
            f"{variable} must be a JSON object with a string 'type', e.g. "
            f'\'{{"type": "{example}"}}\'; the value set is not'
        )
    return config


@dataclass(frozen=True)
class PlatformSettings:
    """Locations and engines the platform library uses. Build with :meth:`from_env`.

    Attributes:
        home: local state directory.
        data_root: root of parquet data (a local path or an fsspec URL such as ``s3://bucket/ml``).
        artifact_root: where model checkpoints and evaluation files are written.
        mlflow_tracking_uri: MLflow tracking (and registry) URI.
        mlflow_artifact_root: default artifact location for new MLflow experiments.
        feast_project: the Feast project all feature repositories are applied to.
        feast_registry: path or URL of the Feast registry.
        feast_offline_store: Feast offline store config (``type`` plus its options). Default:
            the platform's ASOF store (``ASOF_OFFLINE_STORE``, Feast's DuckDB store with ASOF
            joins); ``ML_PLATFORM_FEAST_OFFLINE_STORE`` replaces it with a JSON object, e.g.
            ``{"type": "duckdb"}`` for Feast's own DuckDB store or
            ``{"type": "ml_platform.features.offline_store.AsofDuckDBOfflineStore",
            "memory_limit": "8GB"}``.
        feast_online_store: Feast online store config (``type`` plus its options). Default:
            SQLite under the home; ``ML_PLATFORM_FEAST_ONLINE_STORE`` replaces it with a JSON
            object, e.g. ``{"type": "redis", "connection_string": "redis:6379"}``.
        audit_url: SQLAlchemy URL of the audit log.
        checkpoint_root: a filesystem directory for training checkpoints. A retried step must
            find it again: on Kubernetes mount a PersistentVolume (or a bucket via FUSE) there.
    """

    home: Path
    data_root: str
    artifact_root: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    feast_project: str = "ml_platform"
    feast_registry: str = ""
    feast_offline_store: dict[str, Any] = field(
        default_factory=lambda: {"type": ASOF_OFFLINE_STORE}
    )
    feast_online_store: dict[str, Any] = field(default_factory=dict)
    audit_url: str = ""
    checkpoint_root: str = ""

    @classmethod
    def from_env(cls, **overrides: Any) -> PlatformSettings:
        """Settings from environment variables, with embedded defaults under the home."""
        home = Path(overrides.pop("home", None) or platform_home())
        env = os.environ.get
        settings = cls(
            home=home,
            data_root=env("ML_PLATFORM_DATA_ROOT") or str(home / "data"),
            artifact_root=env("ML_PLATFORM_ARTIFACT_ROOT") or str(home / "artifacts"),
            mlflow_tracking_uri=env("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            mlflow_artifact_root=env("ML_PLATFORM_MLFLOW_ARTIFACT_ROOT")
            or (home / "mlartifacts").as_uri(),
            feast_project=env("ML_PLATFORM_FEAST_PROJECT") or "ml_platform",
            feast_registry=env("ML_PLATFORM_FEAST_REGISTRY") or str(home / "feast" / "registry.db"),
            feast_offline_store=feast_offline_store(),
            feast_online_store=feast_online_store(home),
            audit_url=env("ML_PLATFORM_AUDIT_URL") or f"sqlite:///{home / 'audit.db'}",
            checkpoint_root=env("ML_PLATFORM_CHECKPOINT_ROOT") or str(home / "checkpoints"),
        )
        return replace(settings, **overrides)

    def data_path(self, *parts: str) -> str:
        """A path under the data root; absolute paths and URLs in ``parts[0]`` are kept."""
        return _join(self.data_root, *parts)

    def artifact_path(self, *parts: str) -> str:
        return _join(self.artifact_root, *parts)


def _join(root: str, *parts: str) -> str:
    if parts and ("://" in parts[0] or parts[0].startswith("/")):
        root, parts = parts[0], parts[1:]
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]]) if parts else root
