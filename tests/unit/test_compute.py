"""Compute profiles: their dagster-k8s config, their tags, and deployment overrides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

from ml_platform.compute.kubernetes import (
    GPU_TAINT,
    SPOT_NODE_LABELS,
    SPOT_TOLERATIONS,
    k8s_config,
    op_tags,
    pool,
    run_tags,
)
from ml_platform.compute.profiles import (
    COMPUTE_PROFILES,
    PROFILES_ENV,
    ComputeProfile,
    ComputeProfileError,
    load_profiles,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted(COMPUTE_PROFILES)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    return path


def test_builtin_profiles_keep_their_names() -> None:
    assert list(COMPUTE_PROFILES) == [
        "cpu-small",
        "cpu-large",
        "gpu-t4",
        "gpu-a100",
        "gpu-h100",
        "gpu-h100-x4",
        "mig-1g.10gb",
        "mig-3g.40gb",
    ]


def test_importing_compute_loads_no_third_party_module() -> None:
    code = (
        "import sys, ml_platform.compute.profiles, ml_platform.compute.kubernetes\n"
        "print([m for m in ('dagster', 'dagster_k8s', 'kubernetes', 'yaml') if m in sys.modules])"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


@pytest.mark.parametrize("name", PROFILES)
def test_k8s_config_is_accepted_by_dagster_k8s(name: str) -> None:
    tags = {"dagster-k8s/config": json.dumps(k8s_config(COMPUTE_PROFILES[name]))}
    config = get_user_defined_k8s_config(tags)
    assert isinstance(config, UserDefinedDagsterK8sConfig)
    assert config.job_spec_config["backoff_limit"] == 0


@pytest.mark.parametrize("name", PROFILES)
def test_k8s_config_requests_equal_limits(name: str) -> None:
    profile = COMPUTE_PROFILES[name]
    resources = k8s_config(profile)["container_config"]["resources"]
    assert resources["requests"] == {"cpu": profile.cpu, "memory": profile.memory}
    expected_limits = dict(resources["requests"])
    if profile.uses_gpu:
        expected_limits[profile.gpu_resource] = str(profile.gpu_count)
    assert resources["limits"] == expected_limits


@pytest.mark.parametrize(
    ("name", "limits"),
    [
        ("cpu-small", {}),
        ("gpu-t4", {"nvidia.com/gpu": "1"}),
        ("gpu-h100-x4", {"nvidia.com/gpu": "4"}),
        ("mig-1g.10gb", {"nvidia.com/mig-1g.10gb": "1"}),
        ("mig-3g.40gb", {"nvidia.com/mig-3g.40gb": "1"}),
    ],
)
def test_gpus_and_mig_slices_are_limits(name: str, limits: dict[str, str]) -> None:
    resources = k8s_config(COMPUTE_PROFILES[name])["container_config"]["resources"]
    assert {k: v for k, v in resources["limits"].items() if "/" in k} == limits


@pytest.mark.parametrize("name", PROFILES)
def test_placement_follows_the_profile(name: str) -> None:
    profile = COMPUTE_PROFILES[name]
    pod = k8s_config(profile)["pod_spec_config"]
    tolerations = pod.get("tolerations", [])
    assert (GPU_TAINT in tolerations) == profile.uses_gpu
    assert all((t in tolerations) == profile.spot for t in SPOT_TOLERATIONS)
    assert pod.get("node_selector", {}).get("nvidia.com/gpu.product") == profile.gpu_product
    assert ("affinity" in pod) == profile.spot
    assert pod["automount_service_account_token"] is False


def test_spot_affinity_accepts_any_cloud_spot_label() -> None:
    affinity = k8s_config(COMPUTE_PROFILES["gpu-t4"])["pod_spec_config"]["affinity"]
    terms = affinity["node_affinity"]["required_during_scheduling_ignored_during_execution"][
        "node_selector_terms"
    ]
    # Terms are ORed: one per cloud, each a single label.
    assert [
        [(e["key"], e["operator"], e["values"]) for e in t["match_expressions"]] for t in terms
    ] == [[(key, "In", [value])] for key, value in SPOT_NODE_LABELS]


@pytest.mark.parametrize("name", PROFILES)
def test_shared_memory_is_a_memory_backed_volume(name: str) -> None:
    profile = COMPUTE_PROFILES[name]
    config = k8s_config(profile)
    volumes = config["pod_spec_config"].get("volumes", [])
    mounts = config["container_config"].get("volume_mounts", [])
    if profile.shared_memory:
        assert volumes == [
            {"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": profile.shared_memory}}
        ]
        assert mounts == [{"name": "dshm", "mount_path": "/dev/shm"}]
    else:
        assert volumes == mounts == []


@pytest.mark.parametrize("name", PROFILES)
def test_job_spec_bounds_the_step_and_never_retries_it(name: str) -> None:
    profile = COMPUTE_PROFILES[name]
    config = k8s_config(profile)
    assert config["job_spec_config"] == {
        "backoff_limit": 0,
        "active_deadline_seconds": profile.max_runtime_seconds,
    }
    assert config["pod_template_spec_metadata"]["labels"] == {"ml-platform/compute-profile": name}
    assert config["job_metadata"]["labels"] == {"ml-platform/compute-profile": name}


@pytest.mark.parametrize(("cpu", "threads"), [("500m", 1), ("1", 1), ("4", 4), ("12.5", 12)])
def test_thread_count_follows_the_cpu_request(cpu: str, threads: int) -> None:
    profile = ComputeProfile(name="p", cpu=cpu, memory="1Gi")
    env = {e["name"]: e["value"] for e in k8s_config(profile)["container_config"]["env"]}
    assert env == {"OMP_NUM_THREADS": str(threads), "ML_PLATFORM_COMPUTE_PROFILE": "p"}


def test_k8s_config_returns_fresh_values() -> None:
    config = k8s_config(COMPUTE_PROFILES["gpu-t4"])
    config["pod_spec_config"]["tolerations"][0]["effect"] = "NoExecute"
    assert GPU_TAINT["effect"] == "NoSchedule"
    assert k8s_config(COMPUTE_PROFILES["gpu-t4"]) != config


def test_op_tags_per_deployment() -> None:
    profile = COMPUTE_PROFILES["gpu-a100"]
    assert op_tags(profile, "local") == {"ml_platform/compute_profile": "gpu-a100"}
    tags = op_tags(profile, "k8s")
    assert tags == {
        "ml_platform/compute_profile": "gpu-a100",
        "dagster-k8s/config": k8s_config(profile),
    }
    assert "dagster/max_runtime" not in tags
    json.dumps(tags)  # Dagster stores non-string op tag values as JSON


def test_op_tags_reject_an_unknown_deployment() -> None:
    with pytest.raises(ValueError, match="deployment 'gke' is not one of local, k8s"):
        op_tags(COMPUTE_PROFILES["cpu-small"], "gke")


def test_run_tags_and_pool() -> None:
    profile = COMPUTE_PROFILES["cpu-small"]
    assert run_tags(profile) == {
        "dagster/max_runtime": "7200",
        "ml_platform/compute_profile": "cpu-small",
    }
    assert pool(profile) is None
    assert pool(COMPUTE_PROFILES["gpu-h100"]) == "gpu-h100"
    assert pool(COMPUTE_PROFILES["gpu-h100-x4"]) == "gpu-h100-x4"
    assert pool(COMPUTE_PROFILES["mig-1g.10gb"]) == "mig-1g-10gb"


def test_load_profiles_without_a_file_is_the_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILES_ENV, raising=False)
    assert load_profiles() == COMPUTE_PROFILES
    assert load_profiles() is not COMPUTE_PROFILES
    monkeypatch.setenv(PROFILES_ENV, "")
    assert load_profiles() == COMPUTE_PROFILES


def test_load_profiles_reads_the_environment_when_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "profiles:\n  gpu-t4: {spot: false}\n")
    monkeypatch.setenv(PROFILES_ENV, str(path))
    assert load_profiles()["gpu-t4"].spot is False


def test_overrides_keep_the_fields_they_leave_out(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
profiles:
  gpu-a100:
    memory: 110Gi
    gpu_product: NVIDIA-A100-SXM4-80GB
    shared_memory: null
  gpu-l4:
    cpu: 8
    memory: 32Gi
    gpu_count: 1
    gpu_product: NVIDIA-L4
    pool: gpu-l4
    node_selector: {cloud.google.com/gke-nodepool: l4}
""",
    )
    profiles = load_profiles(path)
    builtin = COMPUTE_PROFILES["gpu-a100"]
    a100 = profiles["gpu-a100"]
    assert (a100.memory, a100.gpu_product, a100.shared_memory) == (
        "110Gi",
        "NVIDIA-A100-SXM4-80GB",
        None,
    )
    assert (a100.cpu, a100.pool, a100.gpu_count) == (builtin.cpu, builtin.pool, builtin.gpu_count)
    l4 = profiles["gpu-l4"]
    assert (l4.cpu, l4.gpu_resource, l4.spot, l4.max_runtime_seconds) == (
        "8",
        "nvidia.com/gpu",
        False,
        6 * 3600,
    )
    assert k8s_config(l4)["pod_spec_config"]["node_selector"] == {
        "cloud.google.com/gke-nodepool": "l4",
        "nvidia.com/gpu.product": "NVIDIA-L4",
    }
    assert COMPUTE_PROFILES["gpu-a100"] == builtin
    assert "gpu-l4" not in COMPUTE_PROFILES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "profiles:\n  gpu-t4: {gpu_cuont: 2}\n",
            "profile 'gpu-t4': unknown field 'gpu_cuont' (did you mean 'gpu_count'?)",
        ),
        (
            "profiles:\n  gpu-t4: {gpu_count: two}\n",
            "profile 'gpu-t4': field 'gpu_count' must be int, got 'two'",
        ),
        (
            "profiles:\n  gpu-t4: {spot: 'yes'}\n",
            "profile 'gpu-t4': field 'spot' must be bool, got 'yes'",
        ),
        (
            "profiles:\n  gpu-t4: {gpu_count: true}\n",
            "profile 'gpu-t4': field 'gpu_count' must be int, got True",
        ),
        (
            "profiles:\n  cpu-small: {cpu: four}\n",
            "profile 'cpu-small': field 'cpu' must be a positive Kubernetes quantity such as "
            "'4' or '500m', got 'four'",
        ),
        (
            "profiles:\n  cpu-small: {memory: 0Gi}\n",
            "profile 'cpu-small': field 'memory' must be a positive Kubernetes quantity",
        ),
        (
            "profiles:\n  gpu-t4: {shared_memory: 16Gi}\n",
            "profile 'gpu-t4': field 'shared_memory' (16Gi) must be smaller than 'memory' (16Gi)",
        ),
        (
            "profiles:\n  gpu-t4: {gpu_resource: gpu}\n",
            "profile 'gpu-t4': field 'gpu_resource' must be an extended resource name",
        ),
        (
            "profiles:\n  gpu-t4: {max_runtime_seconds: 0}\n",
            "profile 'gpu-t4': field 'max_runtime_seconds' must be a positive integer, got 0",
        ),
        (
            "profiles:\n  cpu-small: {gpu_product: Tesla-T4}\n",
            "profile 'cpu-small': field 'gpu_product' is 'Tesla-T4' but 'gpu_count' is 0",
        ),
        (
            "profiles:\n  gpu-l4: {gpu_count: 1}\n",
            "profile 'gpu-l4': a new profile needs 'cpu' and 'memory'",
        ),
        (
            "profiles:\n  GPU L4: {cpu: '8', memory: 32Gi}\n",
            "profile 'GPU L4': name 'GPU L4' must be at most 63 letters",
        ),
        (
            "profiles:\n  gpu-t4: {node_selector: {pool: 3}}\n",
            "profile 'gpu-t4': field 'node_selector' must map label names to string values",
        ),
        ("profiles:\n  gpu-t4: 4\n", "profile 'gpu-t4': expected a mapping of fields, got int"),
        ("gpu-t4: {cpu: '4'}\n", "expected one top-level key 'profiles'"),
        ("profiles: [gpu-t4]\n", "'profiles' must map profile names to fields, got list"),
        ("profiles: {gpu-t4: {cpu: '4'\n", "not valid YAML"),
    ],
)
def test_invalid_profiles_name_the_profile_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ComputeProfileError) as raised:
        load_profiles(path)
    assert str(raised.value).startswith(f"compute profiles '{path}'")
    assert message in str(raised.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "profiles:\n  gpu-t4: {cpu: x, spot: 1}\n  gpu-l4: {cpu: '8'}\n")
    with pytest.raises(ComputeProfileError) as raised:
        load_profiles(path)
    assert raised.value.problems == [
        "profile 'gpu-t4': field 'spot' must be bool, got 1",
        "profile 'gpu-l4': a new profile needs 'memory' (built-in profiles: "
        + ", ".join(COMPUTE_PROFILES)
        + ")",
    ]


def test_a_missing_file_says_which_variable_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ComputeProfileError, match=f"cannot read the file .*fix {PROFILES_ENV}"):
        load_profiles(tmp_path / "absent.yaml")


def test_an_invalid_profile_cannot_be_built() -> None:
    with pytest.raises(ComputeProfileError) as raised:
        ComputeProfile(name="tiny", cpu="1", memory="1Gi", shared_memory="2Gi", gpu_count=-1)
    assert str(raised.value).startswith("compute profile 'tiny':\n  - ")
    assert len(raised.value.problems) == 2
