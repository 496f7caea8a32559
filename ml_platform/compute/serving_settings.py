"""The deployment's settings for prediction services: the Helm values' ``serving:`` block.

``ml_platform.compute.serving`` renders a model's serving manifests with them. Standard library
only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServingSettings:
    """The deployment's settings for prediction services (the Helm values' ``serving:`` block).

    Attributes:
        namespace: the namespace of the services (the code location's).
        image: the container image, ``repository:tag``; the code location's image by default, so
            the service runs the same code and specs as the training that made its model.
        image_pull_policy: ``IfNotPresent``, ``Always`` or ``Never``.
        port: the container port the service listens on (``--port``).
        service_port: the port of the Kubernetes Service.
        env: extra literal environment variables.
        env_config_maps: ConfigMaps whose keys become env vars (MLflow, Feast, data locations).
        env_secrets: Secrets whose keys become env vars (the audit database URL, credentials).
        compute_profiles_config_map: the ConfigMap holding ``compute-profiles.yaml``, mounted at
            ``/etc/ml-platform`` as in the code location (specs are checked against it), or None.
        api_keys_secret: the Secret with key ``api-keys`` (one ``name:key`` per line), mounted as
            a file the service reads (``ML_PLATFORM_SERVING_API_KEYS_FILE``).
        journal_size_limit: the size of the call journal volume.
        durable_journal: False: the journal is an ``emptyDir`` (survives a container restart, not
            the pod); True: a StatefulSet with one PersistentVolumeClaim per replica, which a
            replaced pod finds again and replays, and every call synced to it before its answer
            (``ML_PLATFORM_SERVING_JOURNAL_FSYNC=always``).
        journal_storage_class: the StorageClass of those claims (None: the cluster's default).
        target_cpu_utilization: the autoscaler's average CPU utilization target, in percent.
        termination_grace_period_seconds: time between SIGTERM and SIGKILL: the preStop pause,
            finishing requests in flight, and flushing the journal to the audit database.
        pre_stop_sleep_seconds: pause before SIGTERM, so that endpoints stop routing to the pod
            before it stops accepting connections.
        refresh_seconds: how often the service polls MLflow for alias and share changes.
    """

    image: str
    namespace: str = "ml-platform"
    image_pull_policy: str = "IfNotPresent"
    port: int = 8080
    service_port: int = 80
    env: Mapping[str, str] = field(default_factory=dict)
    env_config_maps: Sequence[str] = ("ml-platform-config",)
    env_secrets: Sequence[str] = ("ml-platform-secrets",)
    compute_profiles_config_map: str | None = "ml-platform-compute-profiles"
    api_keys_secret: str = "ml-platform-serving-api-keys"
    journal_size_limit: str = "1Gi"
    durable_journal: bool = False
    journal_storage_class: str | None = None
    target_cpu_utilization: int = 70
    termination_grace_period_seconds: int = 70
    pre_stop_sleep_seconds: int = 5
    refresh_seconds: int = 5


def settings_from_values(values: Mapping[str, Any]) -> ServingSettings:
    """The serving settings of a Helm values document (its ``serving:`` block).

    The image defaults to the first code location of ``dagster-user-deployments.deployments``.

    Args:
        values: the parsed ``deploy/helm/values.yaml``.

    Returns:
        The settings, with the defaults of :class:`ServingSettings` for keys left out.

    Raises:
        ValueError: the block names an unknown key, or no image can be found; the message says
            which key and what is expected.
    """
    block = dict(values.get("serving") or {})
    keys = {
        "namespace": "namespace",
        "imagePullPolicy": "image_pull_policy",
        "port": "port",
        "servicePort": "service_port",
        "env": "env",
        "envConfigMaps": "env_config_maps",
        "envSecrets": "env_secrets",
        "computeProfilesConfigMap": "compute_profiles_config_map",
        "apiKeysSecret": "api_keys_secret",
        "targetCPUUtilizationPercentage": "target_cpu_utilization",
        "terminationGracePeriodSeconds": "termination_grace_period_seconds",
        "preStopSleepSeconds": "pre_stop_sleep_seconds",
        "refreshSeconds": "refresh_seconds",
    }
    journal_keys = {
        "sizeLimit": "journal_size_limit",
        "durable": "durable_journal",
        "storageClassName": "journal_storage_class",
    }
    unknown = sorted(set(block) - set(keys) - {"image", "journal"})
    journal = dict(block.get("journal") or {})
    unknown += [f"journal.{k}" for k in sorted(set(journal) - set(journal_keys))]
    if unknown:
        raise ValueError(
            f"serving: unknown keys {', '.join(unknown)}; allowed: "
            f"{', '.join([*keys, 'image', *(f'journal.{k}' for k in journal_keys)])}"
        )
    image = block.get("image") or _code_location_image(values)
    if not image or not image.get("repository") or not image.get("tag"):
        raise ValueError(
            "serving.image: set repository and tag, or give dagster-user-deployments.deployments "
            "an image for the service to share"
        )
    arguments: dict[str, Any] = {keys[k]: v for k, v in block.items() if k in keys}
    arguments |= {journal_keys[k]: v for k, v in journal.items()}
    for key in ("env_config_maps", "env_secrets"):
        if key in arguments:
            arguments[key] = tuple(arguments[key])
    arguments.setdefault("image_pull_policy", image.get("pullPolicy", "IfNotPresent"))
    return ServingSettings(image=f"{image['repository']}:{image['tag']}", **arguments)


def _code_location_image(values: Mapping[str, Any]) -> dict[str, Any] | None:
    deployments = (values.get("dagster-user-deployments") or {}).get("deployments") or []
    return deployments[0].get("image") if deployments else None
