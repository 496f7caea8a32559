"""The Kubernetes Job of every compute profile's step, built by dagster-k8s itself, no cluster.

A small real Dagster job (one asset per profile, with ``op_tags(profile, "k8s")`` and
``pool(profile)``) is launched from the launchpad (with and without executor config), the asset
catalog's Materialize button (the implicit asset job), a schedule tick and a sensor request. For
each run the test does what the run worker does: rebuild the job from the run's code origin, build
the execution plan from the run, create the ``k8s_job_executor`` from the instance's
``K8sRunLauncher``, and call ``K8sStepHandler.launch_step`` for every step. The only fake is the
kubernetes client's HTTP layer, which records the Job that ``BatchV1Api.create_namespaced_job``
POSTs. The run launcher and the code location's container context come from
``deploy/helm/values.yaml``; one Job's container command is then run for real.

Each Job is validated against the Kubernetes OpenAPI schema (kubernetes-validate, strict) and
compared with ``tests/unit/snapshots/k8s/<profile>.yaml``; ``UPDATE_SNAPSHOTS=1`` rewrites them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import difflib
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes_validate
import pytest
import urllib3
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import _get_execution_plan_from_run
from dagster._core.execution.context_creation_job import orchestration_context_event_generator
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import RUN_KEY_TAG, SCHEDULED_EXECUTION_TIME_TAG
from dagster._core.test_utils import instance_for_test
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster_k8s import k8s_job_executor
from dagster_k8s.executor import K8sStepHandler
from kubernetes.client import rest

from ml_platform.compute.kubernetes import (
    GPU_PRODUCT_LABEL,
    PROFILE_LABEL,
    SPOT_NODE_LABELS,
    SPOT_TOLERATIONS,
    op_tags,
    pool,
    run_tags,
)
from ml_platform.compute.profiles import COMPUTE_PROFILES, ComputeProfile

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HELM_VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
RBAC = PROJECT_ROOT / "deploy" / "k8s" / "rbac.yaml"
CONFIGMAP = PROJECT_ROOT / "deploy" / "k8s" / "configmap.example.yaml"
SNAPSHOTS = Path(__file__).parent / "snapshots" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still in the clouds' standard support
RELEASE = "dagster"  # helm release name: the chart names its ConfigMaps "dagster-*"
NAMESPACE = "ml-platform"
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome
IMAGE_PYTHON = "/opt/venv/bin/python"  # the Dockerfile's virtual environment
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Executor config for every step (run config, or k8s_job_executor.configured(...)): dagster-k8s
# merges each step's dagster-k8s/config over it (dictionaries key by key, lists appended).
EXECUTOR_CONFIG = {
    "step_k8s_config": {
        "pod_template_spec_metadata": {"labels": {"team": "ml-platform"}},
        "pod_spec_config": {
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ]
        },
    }
}
# A run-level dagster-k8s/config (here from the sensor): it sizes the run worker pod only.
RUN_POD_CONFIG = {"container_config": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}}
SCHEDULE_TIME = datetime.datetime(2026, 1, 5, 3, 0, tzinfo=datetime.UTC)
JOB_NAME = "profiles_training"


def _step_name(profile: ComputeProfile) -> str:
    return "train_" + profile.name.replace("-", "_").replace(".", "_")


def _profile_asset(profile: ComputeProfile) -> dg.AssetsDefinition:
    @dg.asset(
        name=_step_name(profile),
        op_tags=op_tags(profile, "k8s"),
        pool=pool(profile),
        tags={"ml_platform/compute_profile": profile.name},
    )
    def trained() -> None:
        """A step that runs with one compute profile."""

    return trained


PROFILE_ASSETS = [_profile_asset(profile) for profile in COMPUTE_PROFILES.values()]
training = dg.define_asset_job(
    JOB_NAME,
    selection=PROFILE_ASSETS,
    tags={**run_tags(COMPUTE_PROFILES["gpu-h100-x4"]), "ml_platform/model": "profiles"},
)
nightly = dg.ScheduleDefinition(
    name="profiles_nightly", job=training, cron_schedule="0 3 * * *", tags={"trigger": "cron"}
)


@dg.sensor(name="profiles_on_new_data", job=training)
def on_new_data() -> Iterator[dg.RunRequest]:
    yield dg.RunRequest(run_key="batch-1", tags={"dagster-k8s/config": json.dumps(RUN_POD_CONFIG)})


DEFINITIONS = dg.Definitions(
    assets=PROFILE_ASSETS,
    jobs=[training],
    schedules=[nightly],
    sensors=[on_new_data],
    executor=k8s_job_executor,  # as ml_platform.definitions does on k8s
)


@dataclass(frozen=True)
class LaunchedStep:
    path: str
    run: DagsterRun
    step_key: str
    manifest: dict[str, Any]


def _helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _code_deployment(values: Mapping[str, Any]) -> dict[str, Any]:
    return values["dagster-user-deployments"]["deployments"][0]


def _image(values: Mapping[str, Any]) -> str:
    image = _code_deployment(values)["image"]
    return f"{image['repository']}:{image['tag']}"


def _service_account(values: Mapping[str, Any]) -> str:
    """The chart's dagster.serviceAccountName: the webserver's, the daemon's and the run
    launcher's ``service_account_name``."""
    return (
        values["global"].get("serviceAccountName")
        or values["serviceAccount"].get("name")
        or f"{RELEASE}-dagster"
    )


def _code_location_service_account(values: Mapping[str, Any]) -> str:
    """The subchart's dagsterUserDeployments.serviceAccountName: the code server's, and the
    ``service_account_name`` of its container context, which launched runs inherit."""
    return (
        values["global"].get("serviceAccountName")
        or values["dagster-user-deployments"]["serviceAccount"].get("name")
        or f"{RELEASE}-dagster-user-deployments"
    )


def _run_launcher_config(values: Mapping[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """dagster.yaml's run_launcher config as the chart's _run-launcher.tpl renders ``values``."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    keys = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    return {
        # In the cluster load_incluster_config is true; here a kubeconfig that is never dialled.
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "job_namespace": launcher["jobNamespace"] or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": _service_account(values),
        "dagster_home": DAGSTER_HOME,
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": [
            f"{RELEASE}-pipeline-env",
            *[c["name"] for c in launcher["envConfigMaps"]],
        ],
        "env_secrets": [s["name"] for s in launcher["envSecrets"]],
        "run_k8s_config": {keys[k]: v for k, v in launcher["runK8sConfig"].items()},
    }


def _code_location_container_context(values: Mapping[str, Any]) -> dict[str, Any]:
    """What the user deployment passes to launched runs (the subchart's k8sContainerContext)."""
    deployment = _code_deployment(values)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    return {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [
                f"{RELEASE}-{deployment['name']}-user-env",
                *[c["name"] for c in deployment["envConfigMaps"]],
            ],
            "env_secrets": [s["name"] for s in deployment["envSecrets"]],
            "volume_mounts": deployment["volumeMounts"],
            "volumes": deployment["volumes"],
            "resources": deployment["resources"],
            "namespace": NAMESPACE,
            "service_account_name": _code_location_service_account(values),
        }
    }


def _code_server_origin(job_name: str, values: Mapping[str, Any]) -> JobPythonOrigin:
    """The origin of a job as the code server in the image reports it: a pointer to the module's
    Definitions (like ``-m ml_platform.definitions``), its python, image and container context."""
    repository = ReconstructableRepository(
        ModuleCodePointer(__name__, "DEFINITIONS", str(PROJECT_ROOT)),
        container_image=_image(values),
        executable_path=IMAGE_PYTHON,
        entry_point=[IMAGE_PYTHON, "-m", "dagster"],
        container_context=_code_location_container_context(values),
    )
    return repository.get_reconstructable_job(job_name).get_python_origin()


@dataclass(frozen=True)
class LaunchPath:
    job: dg.JobDefinition
    tags: dict[str, str]
    asset_selection: set[dg.AssetKey] | None = None
    run_config: dict[str, Any] | None = None


def _launch_paths(instance: dg.DagsterInstance) -> dict[str, LaunchPath]:
    """The runs that each way of launching creates: job, tags, asset selection, run config."""
    job = DEFINITIONS.resolve_job_def(JOB_NAME)
    asset_job = DEFINITIONS.resolve_implicit_global_asset_job_def()
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=SCHEDULE_TIME
    ) as context:
        scheduled = nightly.evaluate_tick(context).run_requests
    sensed = on_new_data.evaluate_tick(dg.build_sensor_context(instance=instance)).run_requests
    assert scheduled and sensed
    schedule_request, sensor_request = scheduled[0], sensed[0]
    assert sensor_request.run_key is not None
    return {
        # Launchpad: the job's tags, as the UI prefills them.
        "launchpad": LaunchPath(job, dict(job.run_tags)),
        # Asset catalog "Materialize": the implicit asset job, a selection, no job tags.
        "catalog": LaunchPath(asset_job, {}, {a.key for a in PROFILE_ASSETS}),
        # As the daemon's scheduler (_create_scheduler_run) and sensor (_create_sensor_run) do.
        "schedule": LaunchPath(
            job,
            {
                **job.run_tags,
                **schedule_request.tags,
                SCHEDULED_EXECUTION_TIME_TAG: SCHEDULE_TIME.isoformat(),
            },
        ),
        "sensor": LaunchPath(
            job,
            {
                **job.run_tags,
                **sensor_request.tags,
                **DagsterRun.tags_for_sensor(on_new_data),
                RUN_KEY_TAG: sensor_request.run_key,
            },
        ),
        # Launchpad with executor config in the run config editor.
        "launchpad+executor": LaunchPath(
            job, dict(job.run_tags), run_config={"execution": {"config": EXECUTOR_CONFIG}}
        ),
    }


def _launch_steps(
    instance: dg.DagsterInstance,
    values: Mapping[str, Any],
    path: str,
    launch: LaunchPath,
    posted: list[tuple[str, str, dict[str, Any]]],
) -> list[LaunchedStep]:
    origin = _code_server_origin(launch.job.name, values)
    run = instance.create_run_for_job(
        job_def=launch.job,
        run_config=launch.run_config,
        tags=launch.tags,
        asset_selection=launch.asset_selection,
        job_code_origin=origin,
    )
    # The run worker (`dagster api execute_run`): job from the run's origin, subset, plan, executor.
    recon = recon_job_from_origin(origin)
    if run.asset_selection:
        recon = recon.get_subset(asset_selection=run.asset_selection)
    plan: ExecutionPlan = _get_execution_plan_from_run(recon, run, instance)
    context = next(
        orchestration_context_event_generator(
            recon, plan, run.run_config, run, instance, True, None, None
        )
    )
    assert not isinstance(context, dg.DagsterEvent), context
    executor = context.executor
    assert isinstance(executor, StepDelegatingExecutor)
    handler = executor._step_handler
    assert isinstance(handler, K8sStepHandler)
    # Not entered: entering and leaving it asserts that every step finished.
    active = ActiveExecution(plan, executor.retries)
    launched = []
    for step in plan.get_steps_to_execute_in_topo_order():
        handler_context = executor._get_step_handler_context(context, [step], active)
        before = len(posted)
        list(handler.launch_step(handler_context))
        assert len(posted) == before + 1, f"{path}: {step.key} created no Job"
        method, url, body = posted[-1]
        assert method == "POST" and url.endswith(f"/namespaces/{NAMESPACE}/jobs"), url
        launched.append(LaunchedStep(path, run, step.key, body))
    return launched


@dataclass(frozen=True)
class Launches:
    steps: list[LaunchedStep]
    worker: subprocess.CompletedProcess[str]
    worker_events: list[str]
    run_job: dict[str, Any]


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory) -> Launches:
    """Every profile's step Job for every launch path, and one step run from its Job's command."""
    values = _helm_values()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "not-a-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    posted: list[tuple[str, str, dict[str, Any]]] = []

    def recorded_request(_client: Any, method: str, url: str, body: Any = None, **_: Any) -> Any:
        posted.append((method, url, copy.deepcopy(body)))
        response = urllib3.HTTPResponse(
            body=json.dumps(body).encode(),
            status=201,
            headers={"content-type": "application/json"},
            preload_content=True,
        )
        return rest.RESTResponse(response)

    run_launcher = {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": _run_launcher_config(values, kubeconfig),
    }
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        instance_for_test(overrides={"run_launcher": run_launcher}) as instance,
    ):
        monkeypatch.setattr(rest.RESTClientObject, "request", recorded_request)
        steps = []
        for path, launch in _launch_paths(instance).items():
            steps += _launch_steps(instance, values, path, launch, posted)
        # The run pod of the launchpad's run, as the daemon launches it.
        before = len(posted)
        run = _by_profile(steps, "launchpad")["gpu-t4"].run
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert len(posted) == before + 1, "launch_run created no Job"
        run_job = posted[-1][2]
        # The step pod has no service-account token: its worker must not need Kubernetes.
        kubeconfig.unlink()
        step = _by_profile(steps, "catalog")["gpu-t4"]
        worker = _run_step_worker(step)
        entries = [r.event_log_entry for r in instance.get_records_for_run(step.run.run_id).records]
        worker_events = [
            entry.dagster_event.event_type_value
            for entry in entries
            if entry.dagster_event and entry.step_key == step.step_key
        ]
    return Launches(steps, worker, worker_events, run_job)


def _run_step_worker(step: LaunchedStep) -> subprocess.CompletedProcess[str]:
    """The step Job's container command, run here with its literal Dagster env vars."""
    container = _container(step.manifest)
    assert container["args"][0] == IMAGE_PYTHON
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KUBERNETES_") and k not in ("KUBECONFIG", "DAGSTER_HOME")
    }
    step_env = (
        "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS",
        "DAGSTER_RUN_JOB_NAME",
        "DAGSTER_RUN_STEP_KEY",
    )
    env.update({e["name"]: e["value"] for e in container["env"] if e["name"] in step_env})
    return subprocess.run(
        [sys.executable, *container["args"][1:]],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def launched_steps(launches: Launches) -> list[LaunchedStep]:
    return launches.steps


def _by_profile(steps: list[LaunchedStep], path: str) -> dict[str, LaunchedStep]:
    names = {_step_name(p): p.name for p in COMPUTE_PROFILES.values()}
    return {names[s.step_key]: s for s in steps if s.path == path}


def _normalized(step: LaunchedStep) -> dict[str, Any]:
    """The Job without what names one run: run id, job name, serialized step arguments."""
    manifest = copy.deepcopy(step.manifest)
    for metadata in (manifest["metadata"], manifest["spec"]["template"]["metadata"]):
        assert metadata["name"].startswith("dagster-step-")
        metadata["name"] = "dagster-step-<hash>"
        metadata["labels"].update({"dagster/run-id": "<run-id>", "dagster/job": "<job>"})
    placeholders = {
        "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS": "<execute-step-args>",
        "DAGSTER_RUN_JOB_NAME": "<job>",
    }
    for env in _container(manifest)["env"]:
        if env["name"] in placeholders:
            env["value"] = placeholders[env["name"]]
    return manifest


def _container(manifest: Mapping[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _execute_step_args(manifest: Mapping[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e.get("value") for e in _container(manifest)["env"]}
    return json.loads(
        zlib.decompress(base64.b64decode(env["DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"])).decode()
    )


PATHS = ("launchpad", "catalog", "schedule", "sensor")


def test_every_profile_is_launched_on_every_path(launched_steps: list[LaunchedStep]) -> None:
    for path in (*PATHS, "launchpad+executor"):
        assert sorted(_by_profile(launched_steps, path)) == sorted(COMPUTE_PROFILES), path


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(COMPUTE_PROFILES))
def test_step_job_is_valid_and_carries_the_profile(
    launched_steps: list[LaunchedStep], name: str, path: str
) -> None:
    profile = COMPUTE_PROFILES[name]
    step = _by_profile(launched_steps, path)[name]
    manifest = step.manifest
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)

    job_spec = manifest["spec"]
    pod = job_spec["template"]["spec"]
    container = _container(manifest)
    assert job_spec["backoffLimit"] == 0
    assert job_spec["activeDeadlineSeconds"] == profile.max_runtime_seconds
    assert job_spec["ttlSecondsAfterFinished"] == 86400  # runK8sConfig of the Helm values
    assert container["image"] == _image(_helm_values())
    assert container["args"][:4] == [IMAGE_PYTHON, "-m", "dagster", "api"]
    assert _execute_step_args(manifest)["step_keys_to_execute"] == [step.step_key]
    assert _execute_step_args(manifest)["pipeline_run_id"] == step.run.run_id

    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key] == resources["limits"][key] == getattr(profile, key)
    gpu_limits = {k: v for k, v in resources["limits"].items() if k.startswith("nvidia.com/")}
    assert gpu_limits == (
        {profile.gpu_resource: str(profile.gpu_count)} if profile.uses_gpu else {}
    )
    assert not any(k.startswith("nvidia.com/") for k in resources["requests"])

    tolerations = pod.get("tolerations", [])
    assert (GPU_TOLERATION in tolerations) == profile.uses_gpu
    assert all((t in tolerations) == profile.spot for t in SPOT_TOLERATIONS)
    node_selector = pod.get("nodeSelector", {})
    assert node_selector.get(GPU_PRODUCT_LABEL) == profile.gpu_product
    affinity_terms = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    spot_labels = [
        (e["key"], e["values"][0]) for term in affinity_terms for e in term["matchExpressions"]
    ]
    assert spot_labels == (SPOT_NODE_LABELS if profile.spot else [])

    shm_volumes = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    shm_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    if profile.shared_memory:
        assert shm_volumes == [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": profile.shared_memory}}
        ]
        assert shm_mounts == [{"name": "dshm", "mountPath": "/dev/shm"}]
    else:
        assert shm_volumes == shm_mounts == []

    assert job_spec["template"]["metadata"]["labels"][PROFILE_LABEL] == name
    assert manifest["metadata"]["labels"][PROFILE_LABEL] == name
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"


@pytest.mark.parametrize("name", sorted(COMPUTE_PROFILES))
def test_launch_path_changes_nothing_in_the_step_job(
    launched_steps: list[LaunchedStep], name: str
) -> None:
    """Run tags (schedule, sensor, run-level dagster-k8s/config) never reach the step pod."""
    jobs = {path: _normalized(_by_profile(launched_steps, path)[name]) for path in PATHS}
    for path in PATHS[1:]:
        assert jobs[path] == jobs["launchpad"], f"{name}: {path} differs from launchpad"
    runs = {path: _by_profile(launched_steps, path)[name].run for path in PATHS}
    assert runs["schedule"].tags["dagster/schedule_name"] == "profiles_nightly"
    assert runs["sensor"].tags["dagster/sensor_name"] == "profiles_on_new_data"
    assert json.loads(runs["sensor"].tags["dagster-k8s/config"]) == RUN_POD_CONFIG
    # The catalog's implicit job has no job tags: the run's max_runtime is missing there, the
    # step's own activeDeadlineSeconds is not.
    assert "dagster/max_runtime" not in runs["catalog"].tags
    assert runs["launchpad"].tags["dagster/max_runtime"] == str(
        COMPUTE_PROFILES["gpu-h100-x4"].max_runtime_seconds
    )


def test_platform_settings_are_merged_under_the_profile(
    launched_steps: list[LaunchedStep],
) -> None:
    """Helm runK8sConfig, the code location's container context and the executor's
    step_k8s_config all reach the step pod; the profile wins where they overlap."""
    values = _helm_values()
    step = _by_profile(launched_steps, "launchpad+executor")["gpu-a100"]
    pod = step.manifest["spec"]["template"]["spec"]
    container = _container(step.manifest)
    assert pod["serviceAccountName"] == _code_location_service_account(values)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] == {"cpu": "12", "memory": "85Gi"}
    (dedicated,) = EXECUTOR_CONFIG["step_k8s_config"]["pod_spec_config"]["tolerations"]
    assert pod["tolerations"] == [dedicated, GPU_TOLERATION]
    labels = step.manifest["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "ml-platform"
    assert labels[PROFILE_LABEL] == "gpu-a100"
    without_executor = _normalized(_by_profile(launched_steps, "launchpad")["gpu-a100"])
    assert "team" not in without_executor["spec"]["template"]["metadata"]["labels"]
    env_from = {
        (kind, ref["name"]) for source in container["envFrom"] for kind, ref in source.items()
    }
    assert {
        ("configMapRef", f"{RELEASE}-pipeline-env"),
        ("configMapRef", f"{RELEASE}-ml-platform-user-env"),
        ("configMapRef", "ml-platform-config"),
        ("secretRef", "ml-platform-secrets"),
    } <= env_from
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == DAGSTER_HOME
    assert env["OMP_NUM_THREADS"]["value"] == "12"
    assert {"name": "compute-profiles", "mountPath": "/etc/ml-platform", "readOnly": True} in (
        container["volumeMounts"]
    )


@pytest.mark.parametrize("name", sorted(COMPUTE_PROFILES))
def test_step_job_matches_its_snapshot(launched_steps: list[LaunchedStep], name: str) -> None:
    rendered = _snapshot_text(name, _normalized(_by_profile(launched_steps, "schedule")[name]))
    snapshot = SNAPSHOTS / f"{name}.yaml"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(rendered)
    assert snapshot.exists(), f"{snapshot} is missing: run with UPDATE_SNAPSHOTS=1"
    if snapshot.read_text() != rendered:
        diff = difflib.unified_diff(
            snapshot.read_text().splitlines(),
            rendered.splitlines(),
            str(snapshot.relative_to(PROJECT_ROOT)),
            "rendered",
            lineterm="",
        )
        pytest.fail(
            f"the {name} step Job changed; if intended, rerun with UPDATE_SNAPSHOTS=1\n"
            + "\n".join(diff)
        )


def _snapshot_text(name: str, manifest: Mapping[str, Any]) -> str:
    header = (
        f"# The step Job of compute profile {name!r} as k8s_job_executor creates it with\n"
        "# deploy/helm/values.yaml. Written by tests/unit/test_k8s_manifests.py with\n"
        "# UPDATE_SNAPSHOTS=1; <placeholders> stand for what names one run.\n"
    )
    return header + yaml.safe_dump(manifest, sort_keys=True, width=100)


def test_run_pod_runs_as_the_run_service_account(launches: Launches) -> None:
    """The K8sRunLauncher's run Job gets the code location's account (deploy/k8s/rbac.yaml's
    ml-platform-dagster-run), not the webserver's and daemon's, and keeps its token: the run
    worker's k8s_job_executor creates the step Jobs."""
    values = _helm_values()
    manifest = launches.run_job
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ml-platform-dagster-run"
    assert pod["serviceAccountName"] == _code_location_service_account(values)
    assert pod["serviceAccountName"] != _service_account(values) == "ml-platform-dagster"
    assert pod.get("automountServiceAccountToken", True) is True
    assert _container(manifest)["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api", "execute_run"]


def test_step_command_runs_without_kubernetes_credentials(launches: Launches) -> None:
    """The Job's command executes the step (here, with no kubeconfig and no token), which is
    what lets step pods run with automountServiceAccountToken: false."""
    assert launches.worker.returncode == 0, launches.worker.stderr[-3000:]
    assert "STEP_SUCCESS" in launches.worker_events, launches.worker_events


def test_strict_validation_catches_a_field_kubernetes_would_drop(
    launched_steps: list[LaunchedStep],
) -> None:
    """The API server silently ignores unknown fields; strict validation is what catches them."""
    manifest = copy.deepcopy(_by_profile(launched_steps, "launchpad")["gpu-t4"].manifest)
    manifest["spec"]["template"]["spec"]["node_selector"] = {GPU_PRODUCT_LABEL: "Tesla-T4"}
    with pytest.raises(kubernetes_validate.ValidationError, match="node_selector"):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", [RBAC, CONFIGMAP], ids=lambda p: p.name)
def test_deploy_manifests_are_valid(path: Path) -> None:
    for document in _documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert document["metadata"]["namespace"] == NAMESPACE


def test_example_compute_profiles_load(tmp_path: Path) -> None:
    from ml_platform.compute.profiles import load_profiles

    (config, profiles_map) = _documents(CONFIGMAP)
    path = tmp_path / "compute-profiles.yaml"
    path.write_text(profiles_map["data"]["compute-profiles.yaml"])
    assert (
        config["data"]["ML_PLATFORM_COMPUTE_PROFILES"] == "/etc/ml-platform/compute-profiles.yaml"
    )
    profiles = load_profiles(path)
    assert profiles["gpu-a100"].gpu_product == "NVIDIA-A100-SXM4-80GB"
    assert profiles["gpu-l4"].pool == "gpu-l4"
