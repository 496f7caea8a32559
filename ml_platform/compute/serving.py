"""Kubernetes manifests of a model's prediction service, rendered from its spec and profile.

``ml-platform serve MODEL`` is the service; this module says how it runs on Kubernetes: a
Deployment (or, with a durable journal, a StatefulSet), a Service, a HorizontalPodAutoscaler and a
PodDisruptionBudget, in plain Kubernetes form (camelCase fields, ``kubectl apply`` ready).

What comes from where:

- the model's ``spec.serving``: ``min_replicas`` and ``max_replicas`` (the autoscaler's bounds)
  and ``profile``, the compute profile that sizes and places the pods (CPU and memory requests
  equal to limits; a GPU profile adds its GPU or MIG limit, node selector and GPU toleration; a
  spot profile its tolerations and node affinity, as for training steps);
- the ``serving:`` block of ``deploy/helm/values.yaml`` (:class:`ServingSettings`): namespace,
  image (the code location's by default), the ConfigMaps and Secrets the code location reads
  (MLflow, Feast, the audit database), the API-key Secret, the journal volume, shutdown timing.

``deploy/k8s/serving.yaml`` is this module's output for the example model
(``python -m ml_platform.compute.serving fraud_detection > deploy/k8s/serving.yaml``);
``tests/unit/test_serving_manifests.py`` keeps it in sync and validates every manifest against the
Kubernetes OpenAPI schema. This module imports only the standard library and the platform's
Dagster-free spec and profile modules.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_platform.compute.kubernetes import (
    GPU_PRODUCT_LABEL,
    GPU_TAINT,
    PROFILE_LABEL,
    SPOT_NODE_LABELS,
    SPOT_TOLERATIONS,
)
from ml_platform.compute.profiles import ComputeProfile, load_profiles, parse_quantity

MODEL_LABEL = "ml-platform/model"
CONTAINER_NAME = "serve"
PORT_NAME = "http"
# Where the pod mounts what the service reads (the env vars are the service's contract).
API_KEYS_DIR = "/etc/ml-platform-serving"
API_KEYS_KEY = "api-keys"
JOURNAL_DIR = "/var/lib/ml-platform/journal"
PROFILES_DIR = "/etc/ml-platform"  # the compute-profiles ConfigMap, as in the code location
JOURNAL_VOLUME = "journal"
API_KEYS_ENV = "ML_PLATFORM_SERVING_API_KEYS_FILE"
JOURNAL_ENV = "ML_PLATFORM_SERVING_JOURNAL_DIR"
JOURNAL_FSYNC_ENV = "ML_PLATFORM_SERVING_JOURNAL_FSYNC"
RUN_AS = 10001  # the Dockerfile's numeric non-root user and group


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


def resource_name(model: str) -> str:
    """The Kubernetes name of a model's service: ``fraud_detection`` -> ``fraud-detection-serving``.

    Raises:
        ValueError: the name would be longer than 63 characters (a Service name's limit).
    """
    name = model.lower().replace("_", "-").replace(".", "-") + "-serving"
    if len(name) > 63:
        raise ValueError(f"model name {model!r} gives {name!r}, longer than 63 characters")
    return name


def serving_manifests(
    model: str,
    profile: ComputeProfile,
    settings: ServingSettings,
    *,
    min_replicas: int,
    max_replicas: int,
) -> list[dict[str, Any]]:
    """The Kubernetes objects that run ``ml-platform serve MODEL``.

    Args:
        model: the model name (its spec's ``name``).
        profile: the compute profile of the pods (the spec's ``serving.profile``).
        settings: the deployment's serving settings.
        min_replicas: the autoscaler's lower bound (``serving.min_replicas``).
        max_replicas: the autoscaler's upper bound (``serving.max_replicas``).

    Returns:
        A Deployment (a StatefulSet with ``durable_journal``), a Service, a
        HorizontalPodAutoscaler and a PodDisruptionBudget, in that order.
    """
    name = resource_name(model)
    selector = {
        "app.kubernetes.io/name": "ml-platform-serving",
        "app.kubernetes.io/instance": name,
    }
    labels = {
        **selector,
        "app.kubernetes.io/component": "prediction-service",
        "app.kubernetes.io/part-of": "ml-platform",
        MODEL_LABEL: model,
        PROFILE_LABEL: profile.name,
    }

    def metadata() -> dict[str, Any]:
        return {"name": name, "namespace": settings.namespace, "labels": dict(labels)}

    kind = "StatefulSet" if settings.durable_journal else "Deployment"
    workload: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": metadata(),
        "spec": _workload_spec(model, name, profile, settings, selector, labels),
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": settings.service_port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": settings.target_cpu_utilization,
                        },
                    },
                }
            ],
            "behavior": {
                # Scale up at once, down slowly: a spike should not flap the replica count.
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }
    disruption_budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(),
        # A node drain takes one replica at a time; each shuts down gracefully.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }
    return [workload, service, autoscaler, disruption_budget]


def _workload_spec(
    model: str,
    name: str,
    profile: ComputeProfile,
    settings: ServingSettings,
    selector: Mapping[str, str],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """The Deployment's (or StatefulSet's) spec; no ``replicas``: the autoscaler owns them."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(selector)},
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": dict(labels),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(settings.port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": _pod_spec(model, profile, settings, selector),
        },
    }
    if not settings.durable_journal:
        # Never below the current capacity during a rollout: one new pod first, then one old out.
        spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        return spec
    claim: dict[str, Any] = {
        "metadata": {"name": JOURNAL_VOLUME, "labels": dict(selector)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": settings.journal_size_limit}},
        },
    }
    if settings.journal_storage_class:
        claim["spec"]["storageClassName"] = settings.journal_storage_class
    spec.update(
        {
            "serviceName": name,
            # Replicas start and stop independently (no ordinal order to wait for).
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "volumeClaimTemplates": [claim],
            # A scaled-down replica's claim is kept: its unflushed journal is replayed when the
            # replica comes back (or by hand, see docs/serving.md).
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
        }
    )
    return spec


def _pod_spec(
    model: str, profile: ComputeProfile, settings: ServingSettings, selector: Mapping[str, str]
) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "api-keys",
            "secret": {
                "secretName": settings.api_keys_secret,
                "items": [{"key": API_KEYS_KEY, "path": API_KEYS_KEY}],
                "defaultMode": 0o440,
            },
        },
        # The root filesystem is read-only: scratch space for MLflow's artifact downloads.
        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
        {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if not settings.durable_journal:
        volumes.append(
            {"name": JOURNAL_VOLUME, "emptyDir": {"sizeLimit": settings.journal_size_limit}}
        )
    mounts: list[dict[str, Any]] = [
        {"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": "/home/app"},
        {"name": JOURNAL_VOLUME, "mountPath": JOURNAL_DIR},
    ]
    if settings.compute_profiles_config_map:
        volumes.append(
            {
                "name": "compute-profiles",
                "configMap": {"name": settings.compute_profiles_config_map},
            }
        )
        mounts.append({"name": "compute-profiles", "mountPath": PROFILES_DIR, "readOnly": True})
    env = [
        {"name": "ML_PLATFORM_DEPLOYMENT", "value": "k8s"},
        {"name": API_KEYS_ENV, "value": f"{API_KEYS_DIR}/{API_KEYS_KEY}"},
        {"name": JOURNAL_ENV, "value": JOURNAL_DIR},
        # A claim that outlives the node is worth its cost only if every call reaches its disk
        # before the answer (a node crash loses the page cache); the emptyDir dies with the pod.
        *([{"name": JOURNAL_FSYNC_ENV, "value": "always"}] if settings.durable_journal else []),
        {"name": "ML_PLATFORM_COMPUTE_PROFILE", "value": profile.name},
        # PyTorch sizes its thread pool from the node's cores, not the container's CPU limit.
        {"name": "OMP_NUM_THREADS", "value": str(max(1, math.floor(parse_quantity(profile.cpu))))},
        *({"name": k, "value": v} for k, v in sorted(settings.env.items())),
    ]
    env_from = [{"configMapRef": {"name": n}} for n in settings.env_config_maps] + [
        {"secretRef": {"name": n}} for n in settings.env_secrets
    ]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        # args, not command: the image's ENTRYPOINT (tini) stays PID 1 and forwards SIGTERM.
        "args": [
            "ml-platform",
            "serve",
            model,
            "--host",
            "0.0.0.0",
            "--port",
            str(settings.port),
            "--refresh-seconds",
            str(settings.refresh_seconds),
        ],
        "ports": [{"name": PORT_NAME, "containerPort": settings.port, "protocol": "TCP"}],
        "env": env,
        "envFrom": env_from,
        "resources": _resources(profile),
        "volumeMounts": mounts,
        # Slow starts (importing torch, loading the model) are the startup probe's to wait for,
        # so liveness can stay strict once the process is up.
        "startupProbe": _probe("/healthz", period=2, failures=60),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        # 503 until a servable champion is loaded and the call trail is open.
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "lifecycle": {
            "preStop": {"exec": {"command": ["sleep", str(settings.pre_stop_sleep_seconds)]}}
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod: dict[str, Any] = {
        # The service never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        # Replicas on different nodes where possible: one node lost takes one replica.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(selector)},
            }
        ],
    }
    pod.update(_placement(profile))
    return pod


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _resources(profile: ComputeProfile) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS: no CPU contention to show up as latency)."""
    requests = {"cpu": profile.cpu, "memory": profile.memory}
    limits = dict(requests)
    if profile.uses_gpu:
        # Extended resources are limits only; Kubernetes sets the request equal to the limit.
        limits[profile.gpu_resource] = str(profile.gpu_count)
    return {"requests": requests, "limits": limits}


def _placement(profile: ComputeProfile) -> dict[str, Any]:
    """Node selector, tolerations and spot affinity: what a training step of the profile gets."""
    placement: dict[str, Any] = {}
    node_selector = dict(profile.node_selector)
    if profile.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = profile.gpu_product
    if node_selector:
        placement["nodeSelector"] = node_selector
    tolerations = []
    if profile.uses_gpu:
        tolerations.append(dict(GPU_TAINT))
    if profile.spot:
        tolerations += [dict(t) for t in SPOT_TOLERATIONS]
        placement["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": k, "operator": "In", "values": [v]}]}
                        for k, v in SPOT_NODE_LABELS
                    ]
                }
            }
        }
    if tolerations:
        placement["tolerations"] = tolerations
    return placement


def render(manifests: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """The manifests as one YAML stream (documents separated by ``---``), ``header`` on top."""
    import yaml

    body = "---\n".join(yaml.safe_dump(dict(m), sort_keys=False, width=100) for m in manifests)
    return header + body


def model_manifests(
    model: str,
    values_path: Path,
    *,
    project_root: Path | None = None,
    profile: str | None = None,
) -> list[dict[str, Any]]:
    """The manifests of a model of the project, with the settings of a Helm values file.

    Args:
        model: the model name.
        values_path: the Helm values file with the ``serving:`` block.
        project_root: the project whose specs are read (default: the current directory).
        profile: a compute profile instead of the spec's ``serving.profile``.

    Returns:
        What :func:`serving_manifests` returns.

    Raises:
        ValueError: the model or the profile is unknown (the message lists the known ones).
    """
    import yaml

    from ml_platform.spec.loading import load_project

    catalog = load_project(project_root)
    if model not in catalog.models:
        raise ValueError(f"no model {model!r} in the project; models: {', '.join(catalog.models)}")
    spec = catalog.models[model]
    profiles = load_profiles()
    name = profile or spec.serving.profile
    if name not in profiles:
        raise ValueError(f"no compute profile {name!r}; profiles: {', '.join(profiles)}")
    settings = settings_from_values(yaml.safe_load(values_path.read_text()) or {})
    return serving_manifests(
        model,
        profiles[name],
        settings,
        min_replicas=spec.serving.min_replicas,
        max_replicas=spec.serving.max_replicas,
    )


HEADER = (
    "# The prediction service of model {model!r}:\n"
    "# {kinds}.\n"
    "# Generated by `python -m ml_platform.compute.serving {model}` from the model's spec.serving\n"
    "# (profile {profile}, {min_replicas}..{max_replicas} replicas) and the serving: block of\n"
    "# {values}; do not edit by hand (tests/unit/test_serving_manifests.py checks it).\n"
    "# Prerequisites and the durability of the call journal: docs/serving.md.\n"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Print a model's serving manifests (``python -m ml_platform.compute.serving MODEL``)."""
    parser = argparse.ArgumentParser(
        prog="python -m ml_platform.compute.serving",
        description="Print the Kubernetes manifests of a model's prediction service.",
    )
    parser.add_argument("model", help="the model name, e.g. fraud_detection")
    parser.add_argument(
        "--values",
        default="deploy/helm/values.yaml",
        help="Helm values file with the serving: block (default: %(default)s)",
    )
    parser.add_argument("--profile", help="a compute profile instead of spec.serving.profile")
    arguments = parser.parse_args(argv)
    try:
        manifests = model_manifests(
            arguments.model, Path(arguments.values), profile=arguments.profile
        )
    except (OSError, ValueError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    workload = manifests[0]
    header = HEADER.format(
        model=arguments.model,
        kinds=", ".join(m["kind"] for m in manifests),
        profile=workload["metadata"]["labels"][PROFILE_LABEL],
        min_replicas=manifests[2]["spec"]["minReplicas"],
        max_replicas=manifests[2]["spec"]["maxReplicas"],
        values=arguments.values,
    )
    sys.stdout.write(render(manifests, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
