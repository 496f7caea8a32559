"""Resources: one typed resource per engine the platform uses, chosen per deployment in one place.

- ``storage``: ``StorageResource`` -> ``PlatformSettings`` (data, artifacts, checkpoints).
- ``registry``: ``ModelRegistryResource`` -> ``ModelRegistry`` (MLflow tracking and registry).
- ``feature_store``: ``FeatureStoreResource`` -> the settings naming the Feast project, registry
  and online store.
- ``audit``: ``AuditLogResource`` -> ``AuditLog`` (the append-only audit trail).
- ``mlflow``: ``MlflowTrackingResource`` -> the Dagster run's MLflow run (dagster-mlflow).
- ``lifecycle``: ``LifecycleResource`` -> a ``StepContext`` (the four engines above) per step.

An empty field takes the embedded default under ``ML_PLATFORM_HOME``, or the matching environment
variable (``PlatformSettings.from_env``), read when the resource is used. Assets take the
resources as typed parameters and hand what they build to the ``ml_platform`` functions, so tests
can pass other resources or call the functions with their own engines.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import dagster as dg

from ml_platform.core.settings import PlatformSettings, deployment, platform_home
from resources.mlflow_tracking import MlflowTrackingResource

if TYPE_CHECKING:
    # The engines are built when a step runs: loading the code location imports none of them.
    from ml_platform.core.audit import AuditLog
    from ml_platform.lifecycle.records import StepContext
    from ml_platform.registry.client import ModelRegistry

__all__ = [
    "AuditLogResource",
    "FeatureStoreResource",
    "LifecycleResource",
    "MlflowTrackingResource",
    "ModelRegistryResource",
    "StorageResource",
    "resources_for_deployment",
]


def _defaults() -> PlatformSettings:
    """The locations an empty field stands for: the environment, else under the home."""
    return PlatformSettings.from_env()


class StorageResource(dg.ConfigurableResource):
    """Where the platform keeps parquet data, artifacts and training checkpoints.

    Attributes:
        home: the local state directory; empty means ``ML_PLATFORM_HOME``.
        data_root: root of parquet data, a path or an fsspec URL (``s3://bucket/ml``).
        artifact_root: where pointers, evaluations and model files are written.
        checkpoint_root: a filesystem directory for training checkpoints (a volume on k8s).
    """

    home: str = ""
    data_root: str = ""
    artifact_root: str = ""
    checkpoint_root: str = ""

    def settings(self) -> PlatformSettings:
        """The platform settings with these locations (the library's locations object)."""
        overrides = {
            name: value
            for name in ("data_root", "artifact_root", "checkpoint_root")
            if (value := getattr(self, name))
        }
        return PlatformSettings.from_env(home=self.home or None, **overrides)


class ModelRegistryResource(dg.ConfigurableResource):
    """The MLflow tracking server and model registry.

    Attributes:
        tracking_uri: MLflow tracking (and registry) URI; empty means ``MLFLOW_TRACKING_URI``,
            else ``sqlite:///$ML_PLATFORM_HOME/mlflow.db``.
        artifact_root: where new experiments keep artifacts; empty means
            ``ML_PLATFORM_MLFLOW_ARTIFACT_ROOT``, else ``$ML_PLATFORM_HOME/mlartifacts``.
        ui_url: base URL of the MLflow UI that the model and evaluation assets link to (runs
            and registered versions). Empty means the environment variable
            ``ML_PLATFORM_MLFLOW_UI_URL`` (``MLFLOW_UI_URL`` is read too), else the tracking
            server when ``tracking_uri`` is ``http(s)://``, else ``http://127.0.0.1:5000``,
            where ``make mlflow`` serves the UI. Set it when the UI is served elsewhere, e.g.
            ``ML_PLATFORM_MLFLOW_UI_URL=http://127.0.0.1:5001`` for ``mlflow ui --port 5001``,
            or the public address of an in-cluster tracking server. Links back from MLflow to
            Dagster runs (the ``dagster_run_url`` tags) use ``DAGSTER_UI_URL``, else
            ``http://127.0.0.1:3000``.
    """

    tracking_uri: str = ""
    artifact_root: str = ""
    ui_url: str = ""

    def registry(self) -> ModelRegistry:
        """A registry on this backend; build it once per step and pass it on (one client)."""
        from ml_platform.registry.client import ModelRegistry

        defaults = _defaults()
        tracking_uri = self.tracking_uri or defaults.mlflow_tracking_uri
        return ModelRegistry(
            tracking_uri=tracking_uri,
            artifact_root=self.artifact_root or defaults.mlflow_artifact_root,
            registry_uri=tracking_uri,
            ui_url=self.ui_url,
        )


class FeatureStoreResource(dg.ConfigurableResource):
    """The Feast feature store: project, registry and online store (offline: DuckDB).

    Attributes:
        project: the Feast project; empty means ``ML_PLATFORM_FEAST_PROJECT``, else
            ``ml_platform``.
        registry: path or URL of the Feast registry; empty means ``ML_PLATFORM_FEAST_REGISTRY``,
            else ``$ML_PLATFORM_HOME/feast/registry.db``.
        online_store_path: the SQLite online store; empty means
            ``$ML_PLATFORM_HOME/feast/online.db``.
    """

    project: str = ""
    registry: str = ""
    online_store_path: str = ""

    def settings(self, storage: StorageResource) -> PlatformSettings:
        """The storage's settings naming this feature store (what ``ml_platform.features`` uses).

        Args:
            storage: the platform storage (sources are read from its data root).

        Returns:
            The settings with this Feast project, registry and online store.
        """
        base = storage.settings()
        online = (
            {"type": "sqlite", "path": self.online_store_path}
            if self.online_store_path
            else base.feast_online_store
        )
        return replace(
            base,
            feast_project=self.project or base.feast_project,
            feast_registry=self.registry or base.feast_registry,
            feast_online_store=online,
        )


class AuditLogResource(dg.ConfigurableResource):
    """The audit log: an SQLAlchemy database of what happened to each model.

    Attributes:
        url: SQLAlchemy URL; empty means ``ML_PLATFORM_AUDIT_URL``, else
            ``sqlite:///$ML_PLATFORM_HOME/audit.db``. One engine per URL and process.
    """

    url: str = ""

    def audit_log(self) -> AuditLog:
        """The audit log at this URL (its engine and tables are made once per process)."""
        from ml_platform.core.audit import AuditLog

        return AuditLog(self.url or _defaults().audit_url)


class LifecycleResource(dg.ConfigurableResource):
    """The engines a model's lifecycle step uses (``ml_platform.lifecycle``), as one resource.

    Attributes:
        storage: where data, artifacts and checkpoints live.
        feature_store: the Feast store the step joins features from.
        registry: the MLflow tracking server and registry.
        audit: the audit log.
    """

    storage: StorageResource
    feature_store: FeatureStoreResource
    registry: ModelRegistryResource
    audit: AuditLogResource

    def step(self, context: dg.AssetExecutionContext) -> StepContext:
        """The `StepContext` a lifecycle function takes, for one step of a Dagster run.

        Args:
            context: the step's context (its run id and log).

        Returns:
            The locations (with this feature store), one registry client and the audit log.
        """
        from ml_platform.lifecycle.records import StepContext

        return StepContext(
            settings=self.feature_store.settings(self.storage),
            registry=self.registry.registry(),
            audit=self.audit.audit_log(),
            dagster_run_id=context.run.run_id,
            log=context.log.info,
        )


def resources_for_deployment() -> dict[str, dg.ConfigurableResource]:
    """The resources of the current deployment (``ML_PLATFORM_DEPLOYMENT``), by resource key.

    Returns:
        ``storage``, ``registry``, ``feature_store``, ``audit``, ``mlflow`` and ``lifecycle``
        (the first four together, for the model assets). Locally every
        location takes its default under ``ML_PLATFORM_HOME``. On Kubernetes the locations the
        cluster must provide, and every URL that can carry a password, are ``dg.EnvVar``s read
        in the pods from the ConfigMap and Secret, never written into run config.
    """
    if deployment() == "local":
        engines: dict[str, dg.ConfigurableResource] = {
            "storage": StorageResource(home=str(platform_home())),
            "registry": ModelRegistryResource(),
            "feature_store": FeatureStoreResource(),
            "audit": AuditLogResource(),
            "mlflow": MlflowTrackingResource(),
        }
    else:
        # Optional locations (checkpoint root, MLflow artifact root, Feast project and registry)
        # stay empty: they are read from the same environment variables when set.
        tracking_uri = dg.EnvVar("MLFLOW_TRACKING_URI")
        engines = {
            "storage": StorageResource(
                data_root=dg.EnvVar("ML_PLATFORM_DATA_ROOT"),
                artifact_root=dg.EnvVar("ML_PLATFORM_ARTIFACT_ROOT"),
            ),
            "registry": ModelRegistryResource(tracking_uri=tracking_uri),
            "feature_store": FeatureStoreResource(),
            "audit": AuditLogResource(url=dg.EnvVar("ML_PLATFORM_AUDIT_URL")),
            "mlflow": MlflowTrackingResource(mlflow_tracking_uri=tracking_uri),
        }
    lifecycle = LifecycleResource(
        storage=engines["storage"],  # type: ignore[arg-type]
        feature_store=engines["feature_store"],  # type: ignore[arg-type]
        registry=engines["registry"],  # type: ignore[arg-type]
        audit=engines["audit"],  # type: ignore[arg-type]
    )
    return {**engines, "lifecycle": lifecycle}
