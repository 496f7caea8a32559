"""Named compute profiles and their translation to dagster-k8s configuration.

A data scientist names a profile in the model spec (``compute.profile: gpu-a100``); the platform
turns it into the ``dagster-k8s/config`` tag of the steps that need it, so nobody writes pod specs.
Locally the profile only selects the device (CPU), so the same definitions run everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TOLERATIONS = [
    {
        "key": "cloud.google.com/gke-spot",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    },
    {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    },
    {
        "key": "eks.amazonaws.com/capacityType",
        "operator": "Equal",
        "value": "SPOT",
        "effect": "NoSchedule",
    },
]


@dataclass(frozen=True)
class ComputeProfile:
    """Resources and placement for one kind of step.

    Attributes:
        name: the profile name used in specs.
        cpu: CPU request (Kubernetes quantity); the limit equals the request for guaranteed QoS.
        memory: memory request and limit.
        gpu_count: number of GPUs (or MIG slices) requested.
        gpu_resource: the extended resource name, ``nvidia.com/gpu`` or a MIG resource.
        gpu_product: value of the ``nvidia.com/gpu.product`` node label to select, if any.
        spot: whether the step may run on spot/preemptible capacity.
        shared_memory: size of the ``/dev/shm`` emptyDir for DataLoader workers and NCCL.
        max_runtime_seconds: bound applied as the ``dagster/max_runtime`` tag.
        pool: Dagster concurrency pool that bounds how many such steps run at once.
    """

    name: str
    cpu: str
    memory: str
    gpu_count: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product: str | None = None
    spot: bool = False
    shared_memory: str | None = None
    max_runtime_seconds: int = 6 * 3600
    pool: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)

    @property
    def uses_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def device(self) -> str:
        return "cuda" if self.uses_gpu else "cpu"


def _gpu(name: str, product: str, count: int = 1, **kwargs: Any) -> ComputeProfile:
    return ComputeProfile(
        name=name,
        gpu_count=count,
        gpu_product=product,
        shared_memory=kwargs.pop("shared_memory", "8Gi"),
        pool=kwargs.pop("pool", f"gpu-{product.split('-')[1].lower()}"),
        **kwargs,
    )


COMPUTE_PROFILES: dict[str, ComputeProfile] = {
    profile.name: profile
    for profile in (
        ComputeProfile(name="cpu-small", cpu="1", memory="4Gi", max_runtime_seconds=2 * 3600),
        ComputeProfile(name="cpu-large", cpu="8", memory="32Gi", shared_memory="4Gi"),
        _gpu("gpu-t4", "Tesla-T4", cpu="4", memory="16Gi", spot=True),
        _gpu("gpu-a100", "NVIDIA-A100-SXM4-40GB", cpu="12", memory="85Gi"),
        _gpu("gpu-h100", "NVIDIA-H100-80GB-HBM3", cpu="16", memory="120Gi"),
        _gpu(
            "gpu-h100-x4",
            "NVIDIA-H100-80GB-HBM3",
            count=4,
            cpu="64",
            memory="480Gi",
            shared_memory="64Gi",
        ),
        _gpu(
            "mig-1g.10gb",
            "NVIDIA-H100-80GB-HBM3",
            cpu="2",
            memory="12Gi",
            gpu_resource="nvidia.com/mig-1g.10gb",
            pool="mig-1g-10gb",
            shared_memory="2Gi",
        ),
        _gpu(
            "mig-3g.40gb",
            "NVIDIA-H100-80GB-HBM3",
            cpu="8",
            memory="48Gi",
            gpu_resource="nvidia.com/mig-3g.40gb",
            pool="mig-3g-40gb",
        ),
    )
}
