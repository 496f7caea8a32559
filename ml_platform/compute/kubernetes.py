"""Compute profiles translated to dagster-k8s configuration, op and run tags, and pools.

Where each setting takes effect (dagster 1.13 / dagster-k8s 0.29):

- ``dagster-k8s/config`` is read from the *op* tags of a step by ``k8s_job_executor``; job-level
  (run) tags configure only the run pod, never the step pods. Asset ``tags=`` are catalog labels
  and never reach a step: pass :func:`op_tags` as the asset's ``op_tags=``.
- ``dagster/max_runtime`` is read from the *run* tags by the daemon's run monitoring; as an op
  tag it does nothing. Put :func:`run_tags` on the job; each step is bounded on its own by the
  Kubernetes Job's ``activeDeadlineSeconds`` from :func:`k8s_config`.
- Pools are the asset/op ``pool=`` argument (:func:`pool`: one pool per GPU type unless a
  profile names its own), limited per deployment with ``dagster instance concurrency set POOL
  LIMIT``.
"""

from __future__ import annotations

import math
from typing import Any

from ml_platform.compute.profiles import ComputeProfile, parse_quantity

USER_DEFINED_K8S_CONFIG_TAG = "dagster-k8s/config"

MAX_RUNTIME_TAG = "dagster/max_runtime"

PROFILE_TAG = "ml_platform/compute_profile"

PROFILE_LABEL = "ml-platform/compute-profile"

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

SHARED_MEMORY_VOLUME = "dshm"

DEPLOYMENTS = ("local", "k8s")

NO_EVICTION_ANNOTATIONS = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "karpenter.sh/do-not-disrupt": "true",
}

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# Each cloud labels spot nodes differently, and a nodeSelector can only AND labels: one selector
# naming all of them matches no node anywhere. Required node affinity ORs its terms, so one pod
# spec selects spot capacity on GKE, AKS, EKS managed node groups and Karpenter alike.
SPOT_NODE_LABELS = [
    ("cloud.google.com/gke-spot", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("karpenter.sh/capacity-type", "spot"),
]

# Spot node pools on GKE, AKS and EKS are tainted with their spot label's key and value; the
# tolerations admit the step there. Karpenter's capacity-type label comes with no taint.
SPOT_TOLERATIONS = [
    {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
    for key, value in SPOT_NODE_LABELS
    if key != "karpenter.sh/capacity-type"
]


def _thread_count(cpu: str) -> int:
    return max(1, math.floor(parse_quantity(cpu)))


def k8s_config(profile: ComputeProfile) -> dict[str, Any]:
    """The ``dagster-k8s/config`` tag value that runs a step with ``profile`` on Kubernetes.

    The keys follow dagster-k8s's ``USER_DEFINED_K8S_JOB_CONFIG_SCHEMA`` (snake_case Kubernetes
    fields). ``k8s_job_executor`` deep-merges it over the run launcher's and executor's
    ``step_k8s_config``: dictionaries merge key by key, lists are appended.

    Args:
        profile: the compute profile of the step.

    Returns:
        ``container_config`` (requests == limits for CPU and memory, GPUs or MIG slices as
        limits, thread count), ``pod_spec_config`` (node selector, tolerations, spot affinity,
        ``/dev/shm``, no service-account token), ``pod_template_spec_metadata`` (the profile label,
        no-eviction annotations), ``job_metadata`` (the profile label) and ``job_spec_config``
        (``backoff_limit`` 0, ``active_deadline_seconds``).
    """
    labels = {PROFILE_LABEL: profile.name}
    return {
        "container_config": _container_config(profile),
        "pod_spec_config": _pod_spec_config(profile),
        "pod_template_spec_metadata": {
            "labels": labels,
            # A running step only ends by itself: node consolidation must not evict it midway.
            "annotations": dict(NO_EVICTION_ANNOTATIONS),
        },
        "job_metadata": {"labels": dict(labels)},
        "job_spec_config": {
            # Dagster retries failed steps itself (RetryPolicy); a Kubernetes retry would run the
            # step again behind Dagster's back and double the GPU bill.
            "backoff_limit": 0,
            "active_deadline_seconds": profile.max_runtime_seconds,
        },
    }


def _container_config(profile: ComputeProfile) -> dict[str, Any]:
    """Resources (requests == limits), the thread count, and the ``/dev/shm`` mount."""
    requests = {"cpu": profile.cpu, "memory": profile.memory}
    limits = dict(requests)
    if profile.uses_gpu:
        # Extended resources are limits only; Kubernetes sets the request equal to the limit.
        limits[profile.gpu_resource] = str(profile.gpu_count)
    container_config: dict[str, Any] = {
        "resources": {"requests": requests, "limits": limits},
        "env": [
            # PyTorch sizes its CPU thread pool from the node's cores, not the container's limit;
            # on a 64-core node a 4-CPU pod would otherwise be throttled by 16x oversubscription.
            {"name": "OMP_NUM_THREADS", "value": str(_thread_count(profile.cpu))},
            {"name": "ML_PLATFORM_COMPUTE_PROFILE", "value": profile.name},
        ],
    }
    if profile.shared_memory:
        container_config["volume_mounts"] = [
            {"name": SHARED_MEMORY_VOLUME, "mount_path": "/dev/shm"}
        ]
    return container_config


def _pod_spec_config(profile: ComputeProfile) -> dict[str, Any]:
    """Placement (node selector, tolerations, spot affinity) and the ``/dev/shm`` volume."""
    pod_spec_config: dict[str, Any] = {
        # Step code never calls the Kubernetes API (the run worker launches steps), so its pods
        # carry no service-account token.
        "automount_service_account_token": False,
    }
    node_selector = dict(profile.node_selector)
    if profile.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = profile.gpu_product
    if node_selector:
        pod_spec_config["node_selector"] = node_selector
    tolerations = []
    if profile.uses_gpu:
        tolerations.append(dict(GPU_TAINT))
    if profile.spot:
        tolerations += [dict(t) for t in SPOT_TOLERATIONS]
        pod_spec_config["affinity"] = {
            "node_affinity": {
                "required_during_scheduling_ignored_during_execution": {
                    "node_selector_terms": [
                        {"match_expressions": [{"key": k, "operator": "In", "values": [v]}]}
                        for k, v in SPOT_NODE_LABELS
                    ]
                }
            }
        }
    if tolerations:
        pod_spec_config["tolerations"] = tolerations
    if profile.shared_memory:
        # Docker's default /dev/shm is 64 MiB: DataLoader workers and NCCL fail with "bus error".
        pod_spec_config["volumes"] = [
            {
                "name": SHARED_MEMORY_VOLUME,
                "empty_dir": {"medium": "Memory", "size_limit": profile.shared_memory},
            }
        ]
    return pod_spec_config


def op_tags(profile: ComputeProfile, deployment: str) -> dict[str, Any]:
    """The op tags of a step that runs with ``profile`` (pass them as the asset's ``op_tags=``).

    Args:
        profile: the compute profile of the step.
        deployment: ``"local"`` or ``"k8s"`` (``ml_platform.core.settings.deployment()``).

    Returns:
        ``{"ml_platform/compute_profile": name}``, plus ``{"dagster-k8s/config": ...}`` on k8s.
        Neither the run timeout (:func:`run_tags`) nor the pool (:func:`pool`) is an op tag.

    Raises:
        ValueError: ``deployment`` is not one of ``local`` and ``k8s``.
    """
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"deployment {deployment!r} is not one of {', '.join(DEPLOYMENTS)}")
    tags: dict[str, Any] = {PROFILE_TAG: profile.name}
    if deployment == "k8s":
        tags[USER_DEFINED_K8S_CONFIG_TAG] = k8s_config(profile)
    return tags


def run_tags(profile: ComputeProfile) -> dict[str, str]:
    """Run tags for a job whose biggest step runs with ``profile`` (the job's ``tags=``).

    ``dagster/max_runtime`` is honoured only as a run tag, by the daemon's run monitoring
    (``run_monitoring.enabled``); an op tag of that name is ignored. The profile tag lets the run
    queue limit runs per GPU type (``tag_concurrency_limits``).

    Args:
        profile: the profile whose ``max_runtime_seconds`` bounds the whole run.

    Returns:
        ``{"dagster/max_runtime": "<seconds>", "ml_platform/compute_profile": name}``.
    """
    return {MAX_RUNTIME_TAG: str(profile.max_runtime_seconds), PROFILE_TAG: profile.name}


def pool(profile: ComputeProfile) -> str | None:
    """The Dagster concurrency pool of steps with ``profile`` (the asset/op ``pool=`` argument).

    The profile's ``pool`` field if set, else one pool per GPU type, limited with one command
    (``dagster instance concurrency set gpu-a100 4``): the MIG slice (``nvidia.com/mig-1g.10gb``
    -> ``mig-1g-10gb``) or ``gpu-<model>`` (``NVIDIA-A100-SXM4-40GB`` -> ``gpu-a100``), with
    ``-x<count>`` for several GPUs per step, since a pool slot is one step whatever its GPUs.

    Args:
        profile: the compute profile of the step.

    Returns:
        The pool name, or None for a CPU profile without an explicit pool (no limit).
    """
    if profile.pool is not None:
        return profile.pool
    if not profile.uses_gpu:
        return None
    if profile.gpu_resource != "nvidia.com/gpu":
        name = profile.gpu_resource.split("/", 1)[1].replace(".", "-")
    elif profile.gpu_product:
        # The product label is vendor-model-...: NVIDIA-H100-80GB-HBM3, Tesla-T4.
        words = profile.gpu_product.split("-")
        name = f"gpu-{words[min(1, len(words) - 1)].lower()}"
    else:
        name = "gpu"
    return name if profile.gpu_count == 1 else f"{name}-x{profile.gpu_count}"
