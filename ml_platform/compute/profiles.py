"""Named compute profiles: the built-in ones, their validation, and deployment overrides.

A data scientist names a profile in the model spec (``compute.profile: gpu-a100``); the platform
turns it into the ``dagster-k8s/config`` op tag of the steps that need it, so nobody writes pod
specs. Locally the profile only selects the device (CPU), so the same definitions run everywhere.

How a profile reaches Kubernetes (op tags, run tags, pools) is in ``compute.kubernetes``.

Deployments may add or override profiles with a YAML file named by ``ML_PLATFORM_COMPUTE_PROFILES``
(see :func:`load_profiles`). This module imports only the standard library at module level.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ml_platform.core.helpers import unknown

PROFILES_ENV = "ML_PLATFORM_COMPUTE_PROFILES"


# https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/
_QUANTITY = re.compile(
    r"^(?P<number>[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_SUFFIX_FACTOR: dict[str | None, float] = {
    None: 1.0,
    **{"n": 1e-9, "u": 1e-6, "m": 1e-3},
    **{suffix: 1000.0**power for power, suffix in enumerate("kMGTPE", start=1)},
    **{f"{suffix}i": 2.0 ** (10 * power) for power, suffix in enumerate("KMGTPE", start=1)},
}
# A label value (the profile name becomes one) and an extended resource name (domain/name).
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_EXTENDED_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*)$")


class ComputeProfileError(ValueError):
    """A compute profile, or a file of profiles, is invalid; the message lists every problem.

    Attributes:
        where: the profile or file that is invalid.
        problems: one sentence per problem, each naming the profile and field.
    """

    def __init__(self, where: str, problems: list[str]) -> None:
        """One line for one problem, else one indented line per problem under ``where``."""
        self.where = where
        self.problems = problems
        if len(problems) == 1:
            message = f"{where}: {problems[0]}"
        else:
            message = f"{where}:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(message)


def _profile_problems(profile: ComputeProfile) -> list[str]:
    """Every problem of ``profile``, each naming its field; checked when a profile is built."""
    problems = []
    if not isinstance(profile.name, str) or not _LABEL_VALUE.match(profile.name):
        problems.append(
            f"name {profile.name!r} must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (it becomes a Kubernetes label value)"
        )
    for key in ("cpu", "memory"):
        value = getattr(profile, key)
        if not _positive_quantity(value):
            example = "'4' or '500m'" if key == "cpu" else "'16Gi'"
            problems.append(
                f"field {key!r} must be a positive Kubernetes quantity such as {example}, "
                f"got {value!r}"
            )
    if profile.shared_memory is not None:
        if not _positive_quantity(profile.shared_memory):
            problems.append(
                "field 'shared_memory' must be a positive Kubernetes quantity such as '8Gi' or "
                f"null, got {profile.shared_memory!r}"
            )
        elif _positive_quantity(profile.memory) and parse_quantity(
            profile.shared_memory
        ) >= parse_quantity(profile.memory):
            problems.append(
                f"field 'shared_memory' ({profile.shared_memory}) must be smaller than 'memory' "
                f"({profile.memory}): /dev/shm is charged to the container's memory limit"
            )
    if not isinstance(profile.gpu_count, int) or isinstance(profile.gpu_count, bool):
        problems.append(f"field 'gpu_count' must be an integer, got {profile.gpu_count!r}")
    elif profile.gpu_count < 0:
        problems.append(f"field 'gpu_count' must be 0 or more, got {profile.gpu_count}")
    elif profile.gpu_count == 0 and profile.gpu_product:
        problems.append(
            f"field 'gpu_product' is {profile.gpu_product!r} but 'gpu_count' is 0; set "
            "gpu_count or clear gpu_product"
        )
    if not isinstance(profile.gpu_resource, str) or not _EXTENDED_RESOURCE.match(
        profile.gpu_resource
    ):
        problems.append(
            "field 'gpu_resource' must be an extended resource name such as 'nvidia.com/gpu' or "
            f"'nvidia.com/mig-1g.10gb', got {profile.gpu_resource!r}"
        )
    if profile.gpu_product is not None and not _LABEL_VALUE.match(str(profile.gpu_product)):
        problems.append(
            f"field 'gpu_product' must be a node label value such as 'NVIDIA-A100-SXM4-40GB', "
            f"got {profile.gpu_product!r}"
        )
    if (
        not isinstance(profile.max_runtime_seconds, int)
        or isinstance(profile.max_runtime_seconds, bool)
        or profile.max_runtime_seconds < 1
    ):
        problems.append(
            "field 'max_runtime_seconds' must be a positive integer, got "
            f"{profile.max_runtime_seconds!r}"
        )
    if profile.pool is not None and (not isinstance(profile.pool, str) or not profile.pool):
        problems.append(f"field 'pool' must be a non-empty string or null, got {profile.pool!r}")
    if not isinstance(profile.node_selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in profile.node_selector.items()
    ):
        problems.append(
            "field 'node_selector' must map label names to string values, got "
            f"{profile.node_selector!r}"
        )
    if not isinstance(profile.spot, bool):
        problems.append(f"field 'spot' must be true or false, got {profile.spot!r}")
    return problems


def _positive_quantity(value: object) -> bool:
    return (
        isinstance(value, str) and _QUANTITY.match(value) is not None and parse_quantity(value) > 0
    )


def parse_quantity(value: str) -> float:
    """A Kubernetes quantity (``500m``, ``16Gi``) as a number of base units."""
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    suffix = match.group("suffix")
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        return float(match.group("number") + suffix)
    return float(match.group("number")) * _SUFFIX_FACTOR[suffix]


@dataclass(frozen=True)
class ComputeProfile:
    """Resources and placement for one kind of step.

    Attributes:
        name: the profile name used in specs (also a Kubernetes label value).
        cpu: CPU request (Kubernetes quantity); the limit equals the request for guaranteed QoS.
        memory: memory request and limit.
        gpu_count: number of GPUs (or MIG slices) requested.
        gpu_resource: the extended resource name, ``nvidia.com/gpu`` or a MIG resource such as
            ``nvidia.com/mig-1g.10gb`` (the GPU operator's "mixed" MIG strategy).
        gpu_product: value of the ``nvidia.com/gpu.product`` node label to select, if any.
        spot: the step runs on spot/preemptible capacity (tolerations plus required affinity).
        shared_memory: size of the memory-backed ``/dev/shm`` for DataLoader workers and NCCL; it
            counts against ``memory``, so it must be smaller.
        max_runtime_seconds: the step Job's ``activeDeadlineSeconds``, and the run's
            ``dagster/max_runtime`` tag (:func:`run_tags`).
        pool: the Dagster concurrency pool that bounds how many such steps run at once; None
            means the pool of the profile's GPU type (:func:`pool`), and no pool on CPU.
        node_selector: extra node labels to require, merged with the GPU product label.
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

    def __post_init__(self) -> None:
        """Raises ``ComputeProfileError`` listing every invalid field."""
        problems = _profile_problems(self)
        if problems:
            raise ComputeProfileError(f"compute profile {self.name!r}", problems)

    @property
    def uses_gpu(self) -> bool:
        """Whether steps with this profile request GPUs (or MIG slices)."""
        return self.gpu_count > 0


def _gpu(name: str, product: str, count: int = 1, **kwargs: Any) -> ComputeProfile:
    kwargs.setdefault("shared_memory", "8Gi")
    return ComputeProfile(name=name, gpu_count=count, gpu_product=product, **kwargs)


COMPUTE_PROFILES: dict[str, ComputeProfile] = {
    profile.name: profile
    for profile in (
        ComputeProfile(name="cpu-small", cpu="1", memory="4Gi", max_runtime_seconds=2 * 3600),
        ComputeProfile(name="cpu-large", cpu="8", memory="32Gi", shared_memory="4Gi"),
        _gpu("gpu-t4", "Tesla-T4", cpu="4", memory="16Gi", spot=True),
        _gpu("gpu-a100", "NVIDIA-A100-SXM4-40GB", cpu="12", memory="85Gi"),
        _gpu("gpu-h100", "NVIDIA-H100-80GB-HBM3", cpu="16", memory="120Gi"),
        # Its own pool, gpu-h100-x4 (see `pool`): a pool slot is one step, whatever its GPU count.
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
            shared_memory="2Gi",
        ),
        _gpu(
            "mig-3g.40gb",
            "NVIDIA-H100-80GB-HBM3",
            cpu="8",
            memory="48Gi",
            gpu_resource="nvidia.com/mig-3g.40gb",
        ),
    )
}


def load_profiles(path: str | os.PathLike[str] | None = None) -> dict[str, ComputeProfile]:
    """The built-in profiles, with those of a deployment's YAML file added or overriding them.

    The file holds one mapping, ``profiles``, from profile name to fields. A built-in profile
    named there keeps every field the file leaves out; a new profile needs ``cpu`` and ``memory``.
    ``null`` clears an optional field (``gpu_product``, ``shared_memory``; for ``pool``, the
    GPU type's pool again, see :func:`pool`)::

        profiles:
          gpu-a100: {memory: 100Gi, spot: true}
          gpu-l4: {cpu: 8, memory: 32Gi, gpu_count: 1, gpu_product: NVIDIA-L4, pool: gpu-l4}

    The same file must reach the code server, the run pods and the step pods (a ConfigMap
    mounted in all three), because each process rebuilds the step tags from it.

    Args:
        path: the YAML file. ``None`` reads ``ML_PLATFORM_COMPUTE_PROFILES`` when called (not at
            import); unset or empty means the built-in profiles only.

    Returns:
        A new dict of profiles by name; ``COMPUTE_PROFILES`` is left unchanged.

    Raises:
        ComputeProfileError: the file is missing or not YAML, or a profile or field is invalid;
            the message names the file, each profile and field, and what is expected.
    """
    if path is None:
        path = os.environ.get(PROFILES_ENV) or None
    if path is None:
        return dict(COMPUTE_PROFILES)
    where = f"compute profiles {os.fspath(path)!r}"
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ComputeProfileError(
            where, [f"cannot read the file ({error.strerror}); fix {PROFILES_ENV} or create it"]
        ) from error
    # Every spec's compute profile is checked against this file while a code location loads:
    # the file is parsed once per distinct content (a changed file is parsed again).
    key = (os.fspath(path), text)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse_profiles(where, text)
        _PARSED.clear()
        _PARSED[key] = parsed
    return dict(parsed)


_PARSED: dict[tuple[str, str], dict[str, ComputeProfile]] = {}
"""The last profiles file parsed, by path and content (``ComputeProfile`` is immutable)."""


def _parse_profiles(where: str, text: str) -> dict[str, ComputeProfile]:
    """The built-in profiles with those of a profiles file's ``text`` added or overriding them."""
    import yaml

    profiles = dict(COMPUTE_PROFILES)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ComputeProfileError(where, [f"not valid YAML: {error}"]) from error
    if not isinstance(document, dict) or set(document) != {"profiles"}:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ComputeProfileError(
            where,
            [f"expected one top-level key 'profiles' (profile name -> fields), got {found}"],
        )
    entries = document["profiles"]
    if not isinstance(entries, dict):
        raise ComputeProfileError(
            where, [f"'profiles' must map profile names to fields, got {type(entries).__name__}"]
        )
    problems: list[str] = []
    for name, entry in entries.items():
        profile, entry_problems = _profile_from_entry(str(name), entry, profiles.get(str(name)))
        problems += entry_problems
        if profile is not None:
            profiles[profile.name] = profile
    if problems:
        raise ComputeProfileError(where, problems)
    return profiles


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "cpu": (str,),
    "memory": (str,),
    "gpu_count": (int,),
    "gpu_resource": (str,),
    "gpu_product": (str, type(None)),
    "spot": (bool,),
    "shared_memory": (str, type(None)),
    "max_runtime_seconds": (int,),
    "pool": (str, type(None)),
    "node_selector": (dict,),
}


def _profile_from_entry(
    name: str, entry: object, base: ComputeProfile | None
) -> tuple[ComputeProfile | None, list[str]]:
    here = f"profile {name!r}"
    if not isinstance(entry, dict):
        return None, [f"{here}: expected a mapping of fields, got {type(entry).__name__}"]
    problems = []
    values: dict[str, Any] = {}
    known = [f.name for f in fields(ComputeProfile) if f.name != "name"]
    for key, value in entry.items():
        if key not in _FIELD_TYPES:
            problems.append(f"{here}: {unknown('field', str(key), known)}")
            continue
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in ("cpu", "memory") and is_number:
            value = str(value)  # YAML reads `cpu: 8` as a number
        expected = _FIELD_TYPES[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
            problems.append(f"{here}: field {key!r} must be {names}, got {value!r}")
            continue
        values[key] = value
    if base is None:
        missing = [key for key in ("cpu", "memory") if key not in values]
        if missing:
            problems.append(
                f"{here}: a new profile needs {' and '.join(repr(m) for m in missing)} "
                f"(built-in profiles: {', '.join(COMPUTE_PROFILES)})"
            )
    if problems:
        return None, problems
    try:
        profile = replace(base, **values) if base else ComputeProfile(name=name, **values)
    except ComputeProfileError as error:
        return None, [f"{here}: {p}" for p in error.problems]
    return profile, []
