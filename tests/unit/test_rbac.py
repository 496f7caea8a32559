"""deploy/k8s/rbac.yaml grants exactly the Kubernetes API calls dagster-k8s makes, per identity.

The allow-lists below name, for every grant, the ``kubernetes.client`` methods that
dagster-k8s 0.29.27 calls and where. The test reads each method's HTTP path and method from the
kubernetes client itself (``*_with_http_info``) to get its (apiGroup, resource, verb), checks
that dagster-k8s's source still makes the call, and compares the Role's rules with the result:
any grant beyond it (``pods/exec``, ``apps/deployments``, ``secrets``, a wildcard) fails, naming
the grant. The Helm values must give the webserver and the daemon one identity and the run pods
the other, and the run queue must hold one training run per model.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster_k8s
import dagster_k8s.client
import dagster_k8s.executor
import dagster_k8s.launcher
import kubernetes.client
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.test_utils import instance_for_test
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_k8s.container_context import K8sContainerContext

from assets.keys import TRAINING_TAG

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RBAC = PROJECT_ROOT / "deploy" / "k8s" / "rbac.yaml"
HELM_VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
NAMESPACE = "ml-platform"
WEBSERVER_ACCOUNT = "ml-platform-dagster"  # webserver and daemon
RUN_ACCOUNT = "ml-platform-dagster-run"  # run pods (and the code server)

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


@dataclass(frozen=True)
class ApiCall:
    """A kubernetes client call that dagster-k8s makes: ``api.method`` in ``module``."""

    api: str  # "BatchV1Api" or "CoreV1Api"
    method: str
    module: str  # dagster_k8s module whose source makes the call
    why: str

    def grant(self) -> Grant:
        """The (apiGroup, resource, verb) the call needs, from the client's own request."""
        source = inspect.getsource(
            getattr(getattr(kubernetes.client, self.api), f"{self.method}_with_http_info")
        )
        found = re.search(r"call_api\(\s*'([^']+)', '([A-Z]+)'", source)
        assert found, f"{self.api}.{self.method}: no request found in the kubernetes client"
        path, http_method = found.groups()
        parts = path.strip("/").split("/")
        # /api/v1/namespaces/{namespace}/<resource>... or /apis/<group>/<version>/namespaces/...
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[parts.index("namespaces") + 2 :]
        resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
        verb = {
            "POST": "create",
            "DELETE": "delete",
            "GET": "get" if len(rest) > 1 else "list",
        }[http_method]
        return (group, resource, verb)


# What the webserver and the daemon call (K8sRunLauncher in the instance's dagster.yaml).
LAUNCHER_CALLS = [
    ApiCall(
        "BatchV1Api",
        "create_namespaced_job",
        "client",
        "launch_run (and resume_run) create the run's Job: create_namespaced_job_with_retries",
    ),
    ApiCall(
        "BatchV1Api",
        "read_namespaced_job_status",
        "client",
        "run monitoring's check_run_worker_health reads the run Job's status (get_job_status)",
    ),
    ApiCall(
        "BatchV1Api",
        "list_namespaced_job",
        "client",
        "get_run_worker_debug_info explains a run without pods (get_job_debug_info)",
    ),
    ApiCall(
        "BatchV1Api",
        "delete_namespaced_job",
        "client",
        "terminate (webserver's Terminate, run monitoring's max_runtime) deletes the Job",
    ),
    ApiCall(
        "CoreV1Api",
        "list_namespaced_pod",
        "client",
        "the Job's pods, to delete them (delete_job) and to explain a failure (debug info)",
    ),
    ApiCall(
        "CoreV1Api",
        "delete_namespaced_pod",
        "client",
        "delete_job deletes the Job's pods itself (kubernetes-client/python issue 234)",
    ),
    ApiCall(
        "CoreV1Api",
        "read_namespaced_pod_log",
        "client",
        "get_pod_debug_info puts the last log lines of a failed run pod in the run's failure",
    ),
    ApiCall(
        "CoreV1Api",
        "list_namespaced_event",
        "client",
        "retrieve_pod_events / get_job_debug_info: why a pod never scheduled or failed",
    ),
]

# What a run pod calls: the run worker's k8s_job_executor (K8sStepHandler).
RUN_CALLS = [
    ApiCall(
        "BatchV1Api",
        "create_namespaced_job",
        "client",
        "launch_step creates each step's Job (create_namespaced_job_with_retries)",
    ),
    ApiCall(
        "BatchV1Api",
        "read_namespaced_job_status",
        "client",
        "check_step_health reads the step Job's status (get_job_status)",
    ),
    ApiCall(
        "BatchV1Api",
        "delete_namespaced_job",
        "client",
        "terminate_step deletes a step's Job when the run is terminated (delete_job)",
    ),
    ApiCall(
        "CoreV1Api",
        "list_namespaced_pod",
        "client",
        "delete_job lists the step Job's pods to delete them",
    ),
    ApiCall(
        "CoreV1Api",
        "delete_namespaced_pod",
        "client",
        "delete_job deletes the step Job's pods",
    ),
]

# Where dagster-k8s reaches those client methods from each component.
COMPONENT_ENTRY_POINTS = {
    "launcher": ("create_namespaced_job_with_retries", "get_job_status", "delete_job",
                 "get_pod_names_in_job", "get_pod_debug_info", "get_job_debug_info"),
    "executor": ("create_namespaced_job_with_retries", "get_job_status", "delete_job"),
}  # fmt: skip

ROLES = {
    "ml-platform-dagster-launcher": (WEBSERVER_ACCOUNT, LAUNCHER_CALLS),
    "ml-platform-dagster-run": (RUN_ACCOUNT, RUN_CALLS),
}


def _documents(path: Path = RBAC) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _granted(role: Mapping[str, Any]) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _grant_problems(role: Mapping[str, Any], calls: Sequence[ApiCall]) -> list[str]:
    """Every grant of ``role`` beyond ``calls`` and every call it does not grant, by name."""
    name = role["metadata"]["name"]
    needed = {call.grant() for call in calls}
    granted = _granted(role)
    problems = [
        f"Role {name} grants {verb!r} on {group or 'core'}/{resource}: no dagster-k8s call needs it"
        for group, resource, verb in sorted(granted - needed)
    ]
    problems += [
        f"Role {name} lacks {verb!r} on {group or 'core'}/{resource}, needed by "
        + "; ".join(f"{c.api}.{c.method} ({c.why})" for c in calls if c.grant() == grant)
        for grant in sorted(needed - granted)
        for group, resource, verb in [grant]
    ]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if "*" in rule.get(field, []):
                problems.append(f"Role {name} has a wildcard in {field}: {rule}")
    return problems


def _roles(documents: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == "Role"}


def test_the_allow_lists_are_calls_dagster_k8s_makes() -> None:
    sources = {
        "client": inspect.getsource(dagster_k8s.client),
        "launcher": inspect.getsource(dagster_k8s.launcher),
        "executor": inspect.getsource(dagster_k8s.executor),
    }
    assert dagster_k8s.__version__ == "0.29.27", "re-derive the allow-lists for this version"
    for call in [*LAUNCHER_CALLS, *RUN_CALLS]:
        assert f".{call.method}(" in sources[call.module], call
    for module, entry_points in COMPONENT_ENTRY_POINTS.items():
        for entry_point in entry_points:
            assert f"_api_client.{entry_point}(" in sources[module], (module, entry_point)
    # The executor reads the current pod only for owner references, which stay off.
    assert (
        "enable_owner_references"
        not in (PROJECT_ROOT / "ml_platform" / "definitions.py").read_text()
    )


@pytest.mark.parametrize("role_name", sorted(ROLES))
def test_role_grants_exactly_what_its_component_calls(role_name: str) -> None:
    role = _roles(_documents())[role_name]
    _, calls = ROLES[role_name]
    assert _grant_problems(role, calls) == []


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}, "core/pods/exec"),
        ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
         "apps/deployments"),
        ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, "core/secrets"),
        ({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["*"]}, "wildcard"),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, "wildcard"),
        ({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["watch"]},
         "'watch' on batch/jobs"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("role_name", sorted(ROLES))
def test_any_extra_grant_is_reported_by_name(
    role_name: str, rule: dict[str, list[str]], named: str
) -> None:
    role = dict(_roles(_documents())[role_name])
    role["rules"] = [*role["rules"], rule]
    problems = _grant_problems(role, ROLES[role_name][1])
    assert problems and all(role_name in p for p in problems)
    assert any(named in p for p in problems), problems


def test_each_service_account_is_bound_to_its_role_only() -> None:
    documents = _documents()
    assert not any(d["kind"].startswith("Cluster") for d in documents)
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in documents)
    accounts = sorted(d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount")
    assert accounts == sorted([WEBSERVER_ACCOUNT, RUN_ACCOUNT])
    bindings = [d for d in documents if d["kind"] == "RoleBinding"]
    bound: dict[str, list[str]] = {}
    for binding in bindings:
        assert binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
        assert binding["roleRef"]["kind"] == "Role"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
            bound.setdefault(subject["name"], []).append(binding["roleRef"]["name"])
    assert bound == {account: [role] for role, (account, _) in ROLES.items()}


def test_helm_values_give_each_component_its_service_account() -> None:
    values = _helm_values()
    code = values["dagster-user-deployments"]
    # global.serviceAccountName would override both (the chart's dagster.serviceAccountName and
    # dagsterUserDeployments.serviceAccountName take it first).
    assert not values["global"].get("serviceAccountName")
    assert values["serviceAccount"] == {"create": False, "name": WEBSERVER_ACCOUNT}
    assert code["serviceAccount"] == {"create": False, "name": RUN_ACCOUNT}
    assert values["rbacEnabled"] is False and code["rbacEnabled"] is False
    # The chart renders the run launcher with dagster.serviceAccountName and the code location's
    # container context with the subchart's account; dagster-k8s merges the second over the first
    # for every run (K8sContainerContext.create_for_run), so run pods get the run account.
    # tests/unit/test_k8s_manifests.py checks the run Job the launcher creates.
    launcher = K8sContainerContext(service_account_name=values["serviceAccount"]["name"])
    run = launcher.merge(K8sContainerContext(service_account_name=code["serviceAccount"]["name"]))
    assert run.run_k8s_config.pod_spec_config["service_account_name"] == RUN_ACCOUNT


def _run_queue_limits(values: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The QueuedRunCoordinator's tag limits as the chart renders them (_concurrency.tpl) and a
    real instance loads them."""
    runs = values["concurrency"]["runs"]
    assert not values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"].get(
        "tagConcurrencyLimits"
    ), "the chart refuses tag limits in both concurrency.runs and queuedRunCoordinator"
    rendered = {
        "concurrency": {
            "runs": {
                "max_concurrent_runs": runs["maxConcurrentRuns"],
                "tag_concurrency_limits": runs["tagConcurrencyLimits"],
            }
        }
    }
    with instance_for_test(overrides=rendered) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        return list(queue.tag_concurrency_limits)


def test_run_queue_runs_one_training_run_per_model() -> None:
    limits = _run_queue_limits(_helm_values())
    assert {
        "key": TRAINING_TAG,
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in limits

    def run(model: str) -> DagsterRun:
        return DagsterRun(job_name="any", tags={TRAINING_TAG: model})

    # What the queue daemon does for each queued run, given the runs in progress.
    counter = TagConcurrencyLimitsCounter(
        [dict(limit) for limit in limits], [run("fraud_detection")]
    )
    assert counter.is_blocked(run("fraud_detection"))
    assert not counter.is_blocked(run("loan_default"))
