"""The Dagster run's MLflow run, made by dagster-mlflow; each training run is nested under it.

``MlflowTrackingResource`` takes the config fields of ``dagster_mlflow``'s ``mlflow_tracking``
resource that matter here and, when a step starts, builds ``dagster_mlflow.resources.MlFlow``:
it starts the MLflow run named after the job and tagged with the ``dagster_run_id``, or resumes
the one an earlier step (another process or pod) of the same Dagster run started. The training
run logged by ``ml_platform.lifecycle.train`` names it as its parent (``parent_run_id``).

``dagster_mlflow`` imports mlflow when it is imported, so it is imported in
``setup_for_execution``, never when the code location loads. ``MlFlow`` works through MLflow's
fluent API, whose state is process-global: it exports ``MLFLOW_TRACKING_URI`` and
``MLFLOW_EXPERIMENT_ID`` to ``os.environ`` (where ``PlatformSettings`` reads the user's
configuration) and leaves its run active in MLflow's run stack (where it would make
``ModelRegistry.log_model_version``'s ``mlflow.start_run(run_id=...)`` fail). The resource
restores all of that once ``MlFlow`` is built, and ends the run through the MLflow client.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from assets.keys import MODEL_TAG
from ml_platform.core.settings import PlatformSettings
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.mlflow_env import mlflow_uris
from ml_platform.registry.tags import TAG_DAGSTER_RUN

DEFAULT_EXPERIMENT = "ml_platform"
"""The experiment of Dagster runs that work on no one model (no ``ml_platform/model`` tag)."""

# Marks the Dagster run's MLflow run: training runs carry the same `dagster_run_id` tag, so the
# tag alone does not tell a resumed step which run is the Dagster run's.
ROLE_TAG = "ml_platform.run_role"
DAGSTER_RUN_ROLE = "dagster_run"


class MlflowTrackingResource(dg.ConfigurableResource):
    """The MLflow run of the Dagster run (dagster-mlflow's ``MlFlow``), parent of training runs.

    Must name the same MLflow backend as ``ModelRegistryResource``: nesting works within one
    tracking server (``resources_for_deployment`` configures both from the same place).

    Attributes:
        experiment_name: the experiment; empty means the model's experiment when the run has
            the ``ml_platform/model`` tag, else ``DEFAULT_EXPERIMENT``.
        mlflow_tracking_uri: MLflow tracking URI; empty means ``MLFLOW_TRACKING_URI``, else
            ``sqlite:///$ML_PLATFORM_HOME/mlflow.db``.
        artifact_root: where a new experiment keeps artifacts (not a dagster-mlflow field); empty
            means ``ML_PLATFORM_MLFLOW_ARTIFACT_ROOT``, else ``$ML_PLATFORM_HOME/mlartifacts``.
        env_to_tag: environment variables logged as tags of the run (e.g. an image tag).
        extra_tags: further tags of the run.
    """

    experiment_name: str = ""
    mlflow_tracking_uri: str = ""
    artifact_root: str = ""
    env_to_tag: list[str] = Field(default_factory=list)
    extra_tags: dict[str, str] = Field(default_factory=dict)

    _run_id: str | None = PrivateAttr(default=None)

    @property
    def parent_run_id(self) -> str | None:
        """The Dagster run's MLflow run id, once set up in a run; else None."""
        return self._run_id

    def registry(self) -> ModelRegistry:
        """The MLflow backend of the runs (for the experiment and the run lookup)."""
        defaults = PlatformSettings.from_env()
        tracking_uri = self.mlflow_tracking_uri or defaults.mlflow_tracking_uri
        return ModelRegistry(
            tracking_uri=tracking_uri,
            artifact_root=self.artifact_root or defaults.mlflow_artifact_root,
            registry_uri=tracking_uri,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Start or resume the Dagster run's MLflow run with dagster-mlflow's ``MlFlow``.

        Args:
            context: the resource's init context; outside a run nothing is started.
        """
        run = context.run
        if run is None:
            return
        registry = self.registry()
        experiment = self.experiment_name or run.tags.get(MODEL_TAG) or DEFAULT_EXPERIMENT
        # Created here first so that the experiment keeps its artifacts under the platform's
        # root (MlFlow's set_experiment would create it with the server's default).
        experiment_id = registry.ensure_experiment(experiment)
        config: dict[str, Any] = {
            "experiment_name": experiment,
            "mlflow_tracking_uri": registry.tracking_uri,
            "parent_run_id": None,
            "mlflow_run_id": _find_dagster_run(registry, experiment_id, run.run_id),
            "env_to_tag": list(self.env_to_tag),
            "extra_tags": {**self.extra_tags, ROLE_TAG: DAGSTER_RUN_ROLE},
        }
        adapter = SimpleNamespace(
            log=context.log, dagster_run=run, run_id=run.run_id, resource_config=config
        )
        with _restored_fluent_state(registry) as active_run_id:
            _build_mlflow(adapter)
            self._run_id = active_run_id()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """End the run: FAILED when a step of the Dagster run failed, else FINISHED.

        With a process (or pod) per step this runs after every step; the next step resumes
        the run, so it ends with the Dagster run's last step, as dagster-mlflow's
        ``end_mlflow_on_run_finished`` hook does.

        Args:
            context: the resource's init context.
        """
        if self._run_id is None or context.run is None:
            return
        failed = context.instance is not None and bool(
            context.instance.get_records_for_run(
                context.run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
            ).records
        )
        status = "FAILED" if failed else "FINISHED"
        self.registry().client.set_terminated(self._run_id, status=status)
        self._run_id = None


def _find_dagster_run(
    registry: ModelRegistry, experiment_id: str, dagster_run_id: str
) -> str | None:
    """The MLflow run an earlier step of this Dagster run started, else None (MlFlow starts one)."""
    runs = registry.client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.{TAG_DAGSTER_RUN} = '{dagster_run_id}' "
            f"and tags.`{ROLE_TAG}` = '{DAGSTER_RUN_ROLE}'"
        ),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _build_mlflow(adapter: SimpleNamespace) -> Any:
    """dagster-mlflow's ``MlFlow`` from a context-like object (it is a beta API: no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        from dagster_mlflow.resources import MlFlow

        return MlFlow(adapter)


@contextmanager
def _restored_fluent_state(registry: ModelRegistry) -> Iterator[Any]:
    """Run the block on ``registry``'s URIs; afterwards restore MLflow's fluent state exactly.

    Restored: the tracking and registry URIs (``mlflow_uris``), every ``MLFLOW_*`` environment
    variable, the active experiment and the active run stack (the run stays RUNNING in the
    backend; only this process stops treating it as the fluent API's current run).

    Yields:
        A function returning the run the block left active, if any.
    """
    from mlflow.tracking import fluent

    environment = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    experiment_id = fluent._active_experiment_id
    last_run_id = fluent._last_active_run_id
    stack = fluent._active_run_stack.get()
    depth = len(stack)

    def active_run_id() -> str | None:
        return stack[-1].info.run_id if len(stack) > depth else None

    try:
        with mlflow_uris(registry.tracking_uri, registry.model_registry_uri):
            yield active_run_id
    finally:
        del stack[depth:]
        fluent._active_experiment_id = experiment_id
        fluent._last_active_run_id = last_run_id
        for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
            if name not in environment:
                del os.environ[name]
        os.environ.update(environment)
