"""Resources: the platform's settings per deployment, chosen in one place."""

from __future__ import annotations

import dagster as dg

from ml_platform.settings import PlatformSettings, deployment, platform_home


class PlatformResource(dg.ConfigurableResource):
    """Where the platform keeps data, artifacts, MLflow, Feast and the audit log.

    Empty fields take the embedded defaults under ``ML_PLATFORM_HOME``; set them (or the matching
    environment variables) to use Postgres, an MLflow server, S3 or Redis instead.
    """

    home: str = ""
    data_root: str = ""
    artifact_root: str = ""
    mlflow_tracking_uri: str = ""
    feast_project: str = ""
    audit_url: str = ""

    def settings(self) -> PlatformSettings:
        overrides = {
            name: getattr(self, name)
            for name in (
                "data_root",
                "artifact_root",
                "mlflow_tracking_uri",
                "feast_project",
                "audit_url",
            )
            if getattr(self, name)
        }
        return PlatformSettings.from_env(home=self.home or None, **overrides)


def resources_for_deployment() -> dict[str, object]:
    """The resources of the current deployment (``ML_PLATFORM_DEPLOYMENT``)."""
    per_deployment: dict[str, dict[str, object]] = {
        "local": {"platform": PlatformResource(home=str(platform_home()))},
        # On Kubernetes every location comes from the environment of the pods (ConfigMap/Secret),
        # read when the resource is used, never baked into run config.
        "k8s": {
            "platform": PlatformResource(
                data_root=dg.EnvVar("ML_PLATFORM_DATA_ROOT"),
                artifact_root=dg.EnvVar("ML_PLATFORM_ARTIFACT_ROOT"),
                mlflow_tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
                audit_url=dg.EnvVar("ML_PLATFORM_AUDIT_URL"),
            )
        },
    }
    return per_deployment[deployment()]
