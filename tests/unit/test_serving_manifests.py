"""The prediction service's Kubernetes manifests: generated, schema-valid, consistent.

``deploy/k8s/serving.yaml`` is ``python -m ml_platform.compute.serving fraud_detection``'s output:
the test renders it again and compares. Every manifest, for every compute profile and both journal
modes (emptyDir Deployment, StatefulSet with a claim per replica), is validated against the
Kubernetes OpenAPI schema (kubernetes-validate, strict, as tests/unit/test_k8s_manifests.py does),
and checked against what the service, the image and the code location's settings expect.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ml_platform.compute.kubernetes import GPU_PRODUCT_LABEL, GPU_TAINT, SPOT_TOLERATIONS
from ml_platform.compute.profiles import COMPUTE_PROFILES
from ml_platform.compute.serving import (
    API_KEYS_ENV,
    JOURNAL_DIR,
    JOURNAL_ENV,
    JOURNAL_FSYNC_ENV,
    RUN_AS,
    main,
    model_manifests,
    resource_name,
    serving_manifests,
)
from ml_platform.compute.serving_settings import ServingSettings, settings_from_values
from ml_platform.serving.server import journal_fsync

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = PROJECT_ROOT / "deploy" / "k8s" / "serving.yaml"
HELM_VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
CONFIGMAP = PROJECT_ROOT / "deploy" / "k8s" / "configmap.example.yaml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"  # as tests/unit/test_k8s_manifests.py
SETTINGS = ServingSettings(image="ghcr.io/your-org/ml-platform:0.1.0")


def _values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def test_checked_in_manifests_are_the_generators_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.delenv("ML_PLATFORM_COMPUTE_PROFILES", raising=False)
    assert main(["fraud_detection"]) == 0
    rendered = capsys.readouterr().out
    assert CHECKED_IN.read_text() == rendered, (
        "deploy/k8s/serving.yaml is stale: run "
        "`.venv/bin/python -m ml_platform.compute.serving fraud_detection "
        "> deploy/k8s/serving.yaml`"
    )


def test_checked_in_manifests_are_valid_and_complete() -> None:
    documents = [d for d in yaml.safe_load_all(CHECKED_IN.read_text()) if d]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert document["metadata"]["namespace"] == "ml-platform"
    kinds = _by_kind(documents)
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    container = _container(kinds["Deployment"])
    assert container["args"][:3] == ["ml-platform", "serve", "fraud_detection"]
    assert container["args"][3:7] == ["--host", "0.0.0.0", "--port", "8080"]


@pytest.mark.parametrize("durable", [False, True], ids=["emptydir", "statefulset"])
@pytest.mark.parametrize("name", sorted(COMPUTE_PROFILES))
def test_every_profile_gives_valid_manifests_with_its_resources(name: str, durable: bool) -> None:
    profile = COMPUTE_PROFILES[name]
    settings = replace(SETTINGS, durable_journal=durable)
    manifests = serving_manifests(
        "fraud_detection", profile, settings, min_replicas=2, max_replicas=10
    )
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    workload = manifests[0]
    assert workload["kind"] == ("StatefulSet" if durable else "Deployment")
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key] == resources["limits"][key] == getattr(profile, key)
    gpu_limits = {k: v for k, v in resources["limits"].items() if k.startswith("nvidia.com/")}
    expected_gpus = {profile.gpu_resource: str(profile.gpu_count)} if profile.uses_gpu else {}
    assert gpu_limits == expected_gpus
    assert not any(k.startswith("nvidia.com/") for k in resources["requests"])
    assert pod.get("nodeSelector", {}).get(GPU_PRODUCT_LABEL) == profile.gpu_product
    tolerations = pod.get("tolerations", [])
    assert (GPU_TAINT in tolerations) == profile.uses_gpu
    assert all((t in tolerations) == profile.spot for t in SPOT_TOLERATIONS)
    assert ("affinity" in pod) == profile.spot
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ML_PLATFORM_COMPUTE_PROFILE"] == name
    assert workload["spec"]["template"]["metadata"]["labels"]["ml-platform/compute-profile"] == name


def test_the_gpu_profile_variant_from_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example model rendered with a GPU profile: a GPU limit, its node and its toleration."""
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.delenv("ML_PLATFORM_COMPUTE_PROFILES", raising=False)
    manifests = model_manifests("fraud_detection", HELM_VALUES, profile="gpu-t4")
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    pod = manifests[0]["spec"]["template"]["spec"]
    assert _container(manifests[0])["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {GPU_PRODUCT_LABEL: "Tesla-T4"}
    assert GPU_TAINT in pod["tolerations"]
    with pytest.raises(ValueError, match="no compute profile 'gpu-x'"):
        model_manifests("fraud_detection", HELM_VALUES, profile="gpu-x")
    with pytest.raises(ValueError, match=r"no model 'nope'.*fraud_detection"):
        model_manifests("nope", HELM_VALUES)


def test_the_service_is_wired_as_the_service_expects() -> None:
    manifests = _by_kind(
        serving_manifests(
            "fraud_detection",
            COMPUTE_PROFILES["cpu-small"],
            SETTINGS,
            min_replicas=3,
            max_replicas=7,
        )
    )
    deployment = manifests["Deployment"]
    template = deployment["spec"]["template"]
    pod = template["spec"]
    container = _container(deployment)
    name = resource_name("fraud_detection")
    # The Service, the autoscaler and the disruption budget find the pods.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert manifests["Service"]["spec"]["selector"] == selector
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 7)
    # The autoscaler owns the replica count: a `kubectl apply` must not reset it.
    assert "replicas" not in deployment["spec"]
    # Ports, probes and metrics.
    (port,) = container["ports"]
    assert port["containerPort"] == 8080 and port["name"] == "http"
    assert manifests["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = template["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    # The API keys are a mounted file, the journal a volume of its own.
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    keys_dir, keys_file = env[API_KEYS_ENV].rsplit("/", 1)
    secret = volumes[mounts[keys_dir]]["secret"]
    assert secret["secretName"] == SETTINGS.api_keys_secret
    assert secret["items"] == [{"key": keys_file, "path": keys_file}]
    assert env[JOURNAL_ENV] == JOURNAL_DIR
    assert volumes[mounts[JOURNAL_DIR]]["emptyDir"] == {"sizeLimit": SETTINGS.journal_size_limit}
    assert not any(k.endswith("_API_KEYS") for k in env), "keys belong in the mounted Secret"
    assert JOURNAL_FSYNC_ENV not in env
    # Graceful shutdown: the preStop pause leaves time to drain and flush before SIGKILL.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop == ["sleep", str(SETTINGS.pre_stop_sleep_seconds)]
    # uvicorn waits up to 30 s for calls in flight (serving.server.GRACEFUL_SECONDS), then the
    # trail's close flushes the journal for up to 30 s more.
    from ml_platform.serving.server import GRACEFUL_SECONDS

    needed = SETTINGS.pre_stop_sleep_seconds + GRACEFUL_SECONDS + 30
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # Non-root, no privilege, no token; every path it writes is a volume.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUN_AS
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"/tmp", "/home/app", JOURNAL_DIR} <= set(mounts)


def test_the_durable_journal_is_a_claim_per_replica() -> None:
    settings = replace(SETTINGS, durable_journal=True, journal_storage_class="premium-rwo")
    manifests = _by_kind(
        serving_manifests(
            "fraud_detection",
            COMPUTE_PROFILES["cpu-small"],
            settings,
            min_replicas=2,
            max_replicas=4,
        )
    )
    statefulset = manifests["StatefulSet"]["spec"]
    (claim,) = statefulset["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    assert claim["spec"]["resources"]["requests"]["storage"] == settings.journal_size_limit
    container = _container(manifests["StatefulSet"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[JOURNAL_DIR] == claim["metadata"]["name"]
    volumes = {v["name"] for v in statefulset["template"]["spec"]["volumes"]}
    assert claim["metadata"]["name"] not in volumes
    assert statefulset["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert statefulset["podManagementPolicy"] == "Parallel"
    assert statefulset["serviceName"] == manifests["Service"]["metadata"]["name"]
    assert manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[JOURNAL_FSYNC_ENV] == "always"


def test_the_service_reads_the_journal_mode_the_durable_pods_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(JOURNAL_FSYNC_ENV, raising=False)
    assert journal_fsync() == "interval"  # the default, which the emptyDir pods keep
    monkeypatch.setenv(JOURNAL_FSYNC_ENV, "always")
    assert journal_fsync() == "always"


def test_strict_validation_catches_a_misspelled_field() -> None:
    (deployment, *_) = serving_manifests(
        "fraud_detection", COMPUTE_PROFILES["cpu-small"], SETTINGS, min_replicas=2, max_replicas=10
    )
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readiness_probe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readiness_probe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_helm_serving_block_shares_the_code_locations_settings() -> None:
    values = _values()
    settings = settings_from_values(values)
    (location,) = values["dagster-user-deployments"]["deployments"]
    image = location["image"]
    assert settings.image == f"{image['repository']}:{image['tag']}"
    assert settings.image_pull_policy == image["pullPolicy"]
    assert list(settings.env_config_maps) == [c["name"] for c in location["envConfigMaps"]]
    assert list(settings.env_secrets) == [s["name"] for s in location["envSecrets"]]
    (profiles_volume,) = [v for v in location["volumes"] if v["name"] == "compute-profiles"]
    assert settings.compute_profiles_config_map == profiles_volume["configMap"]["name"]
    (profiles_mount,) = [m for m in location["volumeMounts"] if m["name"] == "compute-profiles"]
    config = yaml.safe_load(CONFIGMAP.read_text().split("\n---\n")[0])
    assert config["data"]["ML_PLATFORM_COMPUTE_PROFILES"].startswith(
        profiles_mount["mountPath"] + "/"
    )
    assert settings.namespace == config["metadata"]["namespace"]
    # What the checked-in manifests say is what the block says.
    kinds = _by_kind([d for d in yaml.safe_load_all(CHECKED_IN.read_text()) if d])
    workload = kinds["StatefulSet" if settings.durable_journal else "Deployment"]
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    assert container["image"] == settings.image
    assert container["ports"][0]["containerPort"] == values["serving"]["port"]
    assert kinds["Service"]["spec"]["ports"][0]["port"] == values["serving"]["servicePort"]
    grace = values["serving"]["terminationGracePeriodSeconds"]
    assert pod["terminationGracePeriodSeconds"] == grace
    env_from = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
    assert env_from == [*values["serving"]["envConfigMaps"], *values["serving"]["envSecrets"]]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == values["serving"]["apiKeysSecret"]
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    target = values["serving"]["targetCPUUtilizationPercentage"]
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == target


def test_an_unknown_serving_key_is_refused() -> None:
    values = _values()
    values["serving"]["replicas"] = 3
    values["serving"]["journal"]["size"] = "2Gi"
    with pytest.raises(ValueError, match=r"unknown keys replicas, journal\.size"):
        settings_from_values(values)
    with pytest.raises(ValueError, match=r"serving\.image"):
        settings_from_values({"serving": {}})


def test_the_image_runs_the_service_under_tini_as_the_pods_user() -> None:
    """The manifests pass `ml-platform serve` as args: the ENTRYPOINT (tini) must stay PID 1."""
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--"\]$', dockerfile, re.M)
    assert re.search(rf"^USER {RUN_AS}:{RUN_AS}$", dockerfile, re.M)
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.M)
    assert exposed and str(SETTINGS.port) in exposed.group(1).split()
    instructions = [line.split()[0] for line in dockerfile.splitlines() if line.strip()]
    assert "HEALTHCHECK" not in instructions
    # The working directory has no assets/: the commands find the specs through the spec path.
    spec_path = re.search(r"ML_PLATFORM_SPEC_PATH=(\S+)", dockerfile)
    assert spec_path and "/opt/venv/bin/python -c 'import importlib" in dockerfile
    assert f"{spec_path.group(1)} \\\n    && test -f {spec_path.group(1)}/" in dockerfile
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert 'ml-platform = "ml_platform.cli.main:main"' in pyproject
    for dependency in ("fastapi", "uvicorn", "prometheus-client"):
        assert f'"{dependency}' in pyproject, dependency
