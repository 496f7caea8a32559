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
from ml_platform.compute.serving_settings import ServingSettings, settings_from_values

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
    volumes, mounts = _volumes(settings)
    container = _container(model, profile, settings, mounts)
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


def _volumes(settings: ServingSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the container's mounts of them."""
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
    return volumes, mounts


def _environment(profile: ComputeProfile, settings: ServingSettings) -> list[dict[str, Any]]:
    """The container's environment variables."""
    return [
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


def _container(
    model: str, profile: ComputeProfile, settings: ServingSettings, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The service's container: ``ml-platform serve``, its probes, resources and mounts."""
    env_from = [{"configMapRef": {"name": n}} for n in settings.env_config_maps] + [
        {"secretRef": {"name": n}} for n in settings.env_secrets
    ]
    return {
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
        "env": _environment(profile, settings),
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
