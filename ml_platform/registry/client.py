"""MLflow tracking and model registry: runs, model versions, the ``champion`` alias.

``ModelRegistry`` is the one place the platform calls MLflow. It is built from the backend's URIs
(``ModelRegistry.for_settings``) and creates one ``MlflowClient`` on first use, so a step builds
one registry and makes all its calls through it. Each training is an MLflow run in the experiment
named after the model; the run carries the tags that make the version reproducible (see
``ml_platform.registry.tags``). Models are logged as MLflow "model from code"
(``ml_platform.registry.pyfunc``) and loaded back through their flavor: nothing is pickled.

MLflow's fluent API keeps its URIs in process globals and exports them to the environment; the
one call that needs it (``mlflow.pyfunc.log_model``) runs inside ``mlflow_uris``, which restores
both afterwards. MLflow is imported inside the functions.

Links go both ways: ``run_url`` and ``version_url`` point at the MLflow UI (``mlflow_ui_url``),
and a training run and its registered version carry the tag ``dagster_run_url``, a link to the
Dagster run that trained them (``dagster_ui_url``).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_platform.core.helpers import redact_url
from ml_platform.registry import serving
from ml_platform.registry.links import (
    dagster_ui_url,
    mlflow_ui_url,
)
from ml_platform.registry.mlflow_env import (
    mlflow_uris,
    pip_requirements,
)
from ml_platform.registry.runs import TrainingRun
from ml_platform.registry.signature import INTEGER_COLUMNS_HINT, example_and_signature
from ml_platform.registry.tags import (
    CHAMPION_ALIAS,
    MLFLOW_GIT_COMMIT,
    MLFLOW_RUN_NAME,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN,
    TAG_DAGSTER_RUN_URL,
    TAG_MLFLOW_RUN_ID,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from ml_platform.core.settings import PlatformSettings
    from ml_platform.registry.serving import ServingState
    from ml_platform.training.flavors.base import FittedModel

PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
TRAINING_DATASET_CONTEXT = "training"
# Where a version's drift reference lives among its training run's artifacts.
REFERENCE_ARTIFACTS = "reference"


@dataclass(frozen=True)
class ModelRegistry:
    """The platform's MLflow backend: experiments, runs, registered versions and their tags.

    Cheap to build; the ``MlflowClient`` is created on first use and reused for every call.

    Attributes:
        tracking_uri: The MLflow tracking URI.
        artifact_root: Where new experiments store artifacts (``<artifact_root>/<experiment>``).
        registry_uri: The MLflow model registry URI; empty means the tracking URI.
        ui_url: Base URL of the MLflow UI for run and version links; empty means
            ``ML_PLATFORM_MLFLOW_UI_URL``, ``MLFLOW_UI_URL``, the tracking server, else the
            ``make mlflow`` address (see ``mlflow_ui_url``).
        dagster_ui_url: Base URL of the Dagster UI for the ``dagster_run_url`` tags; empty
            means ``DAGSTER_UI_URL``, else the ``make dev`` address.
    """

    tracking_uri: str
    artifact_root: str
    registry_uri: str = ""
    ui_url: str = ""
    dagster_ui_url: str = ""

    @classmethod
    def for_settings(cls, settings: PlatformSettings) -> ModelRegistry:
        """The registry on the platform's MLflow backend (tracking and registry on one URI).

        Args:
            settings: The platform settings.

        Returns:
            A registry for ``settings.mlflow_tracking_uri``.
        """
        return cls(
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_root=settings.mlflow_artifact_root,
            registry_uri=settings.mlflow_tracking_uri,
        )

    @property
    def model_registry_uri(self) -> str:
        """The registry URI in use: ``registry_uri``, else the tracking URI."""
        return self.registry_uri or self.tracking_uri

    @cached_property
    def client(self) -> MlflowClient:
        """The MLflow client on this backend, created once."""
        import mlflow

        return mlflow.MlflowClient(self.tracking_uri, self.model_registry_uri)

    @contextmanager
    def fluent(self) -> Iterator[None]:
        """Point MLflow's fluent API at this backend for the block (see ``mlflow_uris``).

        Yields:
            Nothing; the block runs with MLflow's URIs set to this backend.
        """
        with mlflow_uris(self.tracking_uri, self.model_registry_uri):
            yield

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created with the platform's artifact root if missing.

        Args:
            name: The experiment name (the model name).

        Returns:
            The experiment id.
        """
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(
            name, artifact_location=f"{self.artifact_root.rstrip('/')}/{name}"
        )

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """A link to a run in the MLflow UI.

        Args:
            experiment_id: The run's experiment id.
            run_id: The run id.

        Returns:
            ``<ui>/#/experiments/<experiment_id>/runs/<run_id>``.
        """
        base = mlflow_ui_url(self.ui_url, self.tracking_uri)
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, model_name: str, version: str) -> str:
        """A link to a registered model version in the MLflow UI.

        Args:
            model_name: The registered model.
            version: The version.

        Returns:
            ``<ui>/#/models/<model_name>/versions/<version>``.
        """
        base = mlflow_ui_url(self.ui_url, self.tracking_uri)
        return f"{base}/#/models/{model_name}/versions/{version}"

    def dagster_run_url(self, dagster_run_id: str) -> str:
        """A link to a Dagster run in the Dagster UI (what ``dagster_run_url`` tags hold).

        Args:
            dagster_run_id: The Dagster run id.

        Returns:
            ``<dagster ui>/runs/<dagster_run_id>``.
        """
        return f"{dagster_ui_url(self.dagster_ui_url)}/runs/{dagster_run_id}"

    def _with_dagster_link(self, tags: dict[str, str]) -> dict[str, str]:
        """``tags`` plus ``dagster_run_url`` when they name a Dagster run."""
        dagster_run = tags.get(TAG_DAGSTER_RUN)
        if not dagster_run or TAG_DAGSTER_RUN_URL in tags:
            return dict(tags)
        return {**tags, TAG_DAGSTER_RUN_URL: self.dagster_run_url(dagster_run)}

    def _run_source(self, tags: dict[str, str]) -> dict[str, str]:
        """MLflow's source tags of a training run: the Dagster run that launched it, if any."""
        link = tags.get(TAG_DAGSTER_RUN_URL)
        return {MLFLOW_SOURCE_TYPE: "JOB", MLFLOW_SOURCE_NAME: link} if link else {}

    @contextmanager
    def start_training_run(
        self, model_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> Iterator[TrainingRun]:
        """Start an MLflow run in the model's experiment; it ends FAILED if the body raises.

        Args:
            model_name: The model name, also the experiment name.
            params: The run's parameters (values are logged as strings, at most 6000 chars).
            tags: The run's tags (see ``ml_platform.registry.tags``); with a Dagster run id
                among them the run also gets ``dagster_run_url``, a link back to that run.

        Yields:
            The running ``TrainingRun``; it ends FINISHED when the block completes.
        """
        from mlflow.entities import Param, RunTag

        experiment_id = self.ensure_experiment(model_name)
        run_name = f"{model_name}-{tags.get(TAG_DAGSTER_RUN, 'local')[:8]}"
        # Params and tags are shown in the MLflow UI: a URL among them loses its credentials.
        tags = self._with_dagster_link(tags)
        tags = {**self._run_source(tags), **tags}
        shown_tags = {name: redact_url(value) for name, value in tags.items()}
        run = self.client.create_run(experiment_id, tags={MLFLOW_RUN_NAME: run_name, **shown_tags})
        run_id = run.info.run_id
        self.client.log_batch(
            run_id,
            params=[Param(str(k), redact_url(str(v))[:6000]) for k, v in sorted(params.items())],
            tags=[RunTag(MLFLOW_GIT_COMMIT, tags.get(TAG_CODE_VERSION, ""))],
            synchronous=True,
        )
        try:
            yield TrainingRun(
                self.client, run_id, experiment_id, self.run_url(experiment_id, run_id)
            )
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def log_model_version(
        self,
        run: TrainingRun,
        model: FittedModel,
        model_name: str,
        input_example: pd.DataFrame,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Log the model in its flavor's own formats, served by model code; register a version.

        Args:
            run: The active training run the model comes from.
            model: The fitted model, of any flavor.
            model_name: The registered model to add a version to.
            input_example: Model input rows; the first five, in the model schema's columns, are
                stored as the version's input example and define its signature.
            tags: Version tags set atomically with the registration (a retry finds the version
                by them, see ``find_version``); ``mlflow_run_id`` is always among them, and
                ``dagster_run_url`` when they name a Dagster run.

        Returns:
            The new version number of registered model ``model_name``.

        Raises:
            RuntimeError: MLflow did not register a version.
        """
        import mlflow
        import mlflow.pyfunc

        example, signature = example_and_signature(model, input_example)
        with tempfile.TemporaryDirectory() as directory:
            model_dir = Path(directory) / "model"
            model.save(model_dir)
            # log_model has no client form: it logs to the fluent API's active run.
            with self.fluent(), mlflow.start_run(run_id=run.run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_CODE),
                    artifacts={"model": str(model_dir)},
                    signature=signature,
                    input_example=example,
                    pip_requirements=pip_requirements(model.flavor),
                )
                # Not log_model's registered_model_name: its version gets no tags at creation.
                registered = mlflow.register_model(
                    info.model_uri,
                    model_name,
                    await_registration_for=60,
                    tags={**self._with_dagster_link(tags or {}), TAG_MLFLOW_RUN_ID: run.run_id},
                )
        version = str(registered.version or "")
        if not version:
            raise RuntimeError(f"MLflow did not register a version of '{model_name}'")
        return version

    def find_version(self, model_name: str, tags: dict[str, str]) -> str | None:
        """The oldest version of a model carrying all of ``tags`` (set when it was registered).

        Args:
            model_name: The registered model.
            tags: Tag name to exact value; names and values must not contain quotes.

        Returns:
            The version, or None when no version carries them.
        """
        return min(self.tagged_versions(model_name, tags), key=int, default=None)

    def tagged_versions(self, model_name: str, tags: dict[str, str]) -> list[str]:
        """The versions of a model carrying all of ``tags``.

        Args:
            model_name: The registered model.
            tags: Tag name to exact value; names and values must not contain quotes.

        Returns:
            Version numbers in ascending order; empty when no version carries them.
        """
        conditions = [f"name='{model_name}'"]
        conditions += [f"tags.`{name}`='{value}'" for name, value in sorted(tags.items())]
        versions = self.client.search_model_versions(" and ".join(conditions))
        return sorted((str(v.version) for v in versions), key=int)

    def describe(self, model_name: str, version: str, description: str) -> None:
        """Show a model's description on its registered model and on one of its versions.

        Args:
            model_name: The registered model.
            version: The version.
            description: The spec's ``description``; empty leaves both as they are.
        """
        if not description:
            return
        if self.client.get_registered_model(model_name).description != description:
            self.client.update_registered_model(model_name, description=description)
        if self.client.get_model_version(model_name, version).description != description:
            self.client.update_model_version(model_name, version, description=description)

    def log_training_input(
        self, run_id: str, frame_or_path: pd.DataFrame | str, name: str, digest: str
    ) -> None:
        """Record the training set as the run's MLflow dataset input (context ``training``).

        MLflow shows it in the run's "Datasets used" with its source path, schema and row
        count. Logging the same dataset (name and digest) again does nothing.

        Args:
            run_id: The training run.
            frame_or_path: The training rows, or the parquet file (path or URL) holding them.
            name: The dataset's name (e.g. ``<model>/training_set``).
            digest: The data snapshot id, the dataset's digest in MLflow.
        """
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = self.client.get_run(run_id).inputs
        logged = inputs.dataset_inputs if inputs is not None else []
        if any(i.dataset.name == name and i.dataset.digest == digest for i in logged):
            return
        with warnings.catch_warnings():
            # MLflow registers its local artifact source twice and says so on every local path.
            warnings.filterwarnings(
                "ignore", "The specified dataset source can be interpreted in multiple ways"
            )
            # A dataset's schema records what the data holds: integer keys and labels included.
            warnings.filterwarnings("ignore", INTEGER_COLUMNS_HINT, UserWarning)
            if isinstance(frame_or_path, str):
                frame, source = _read_parquet(frame_or_path), redact_url(frame_or_path)
                dataset = from_pandas(frame, source=source, name=name, digest=digest)
            else:
                dataset = from_pandas(frame_or_path, name=name, digest=digest)
            entity = dataset._to_mlflow_entity()  # infers the schema: the hint comes from here
        context = InputTag(key=MLFLOW_DATASET_CONTEXT, value=TRAINING_DATASET_CONTEXT)
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset=entity, tags=[context])])

    def training_run_of(self, model_name: str, version: str) -> TrainingRun:
        """The training run a registered version was logged from.

        Args:
            model_name: The registered model.
            version: The version.

        Returns:
            The run (it may have ended, FAILED when a step failed after registering).
        """
        run_id = str(self.client.get_model_version(model_name, version).run_id)
        run = self.client.get_run(run_id)
        experiment_id = run.info.experiment_id
        return TrainingRun(self.client, run_id, experiment_id, self.run_url(experiment_id, run_id))

    def finish_run(self, run_id: str) -> None:
        """Mark a training run FINISHED (a retry that completed its registration).

        Args:
            run_id: The MLflow run id.
        """
        self.client.set_terminated(run_id, status="FINISHED")

    def log_evaluation(
        self, run_id: str, metrics: dict[str, float], report: dict[str, Any]
    ) -> None:
        """Add an evaluation to the training run: ``test_<metric>`` metrics and the report.

        Args:
            run_id: The training run of the evaluated version.
            metrics: Test-split metrics; NaN values are skipped.
            report: The evaluation report, stored as ``evaluation/report.json``.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key=f"test_{name}", value=float(value), timestamp=now, step=0)
            for name, value in metrics.items()
            if value == value
        ]
        self.client.log_batch(run_id, metrics=batch, synchronous=True)
        self.client.log_dict(run_id, report, "evaluation/report.json")

    def log_plots(self, run_id: str, plots: dict[str, bytes]) -> None:
        """Add an evaluation's pictures to the training run, as ``evaluation/plots/<name>.png``.

        Args:
            run_id: The training run of the evaluated version.
            plots: Plot name to PNG bytes.
        """
        if not plots:
            return
        with tempfile.TemporaryDirectory() as directory:
            for name, png in plots.items():
                Path(directory, f"{name}.png").write_bytes(png)
            self.client.log_artifacts(run_id, directory, "evaluation/plots")

    def log_reference(self, run_id: str, statistics: dict[str, Any], sample: pd.DataFrame) -> None:
        """Add a version's drift reference to its training run, under ``reference/``.

        Args:
            run_id: The training run of the version.
            statistics: The reference statistics (``ReferenceStatistics.to_dict()``), stored as
                ``reference/statistics.json``.
            sample: The bounded sample of training inputs the drift report shows, stored as
                ``reference/sample.parquet``.
        """
        self.client.log_dict(run_id, statistics, f"{REFERENCE_ARTIFACTS}/statistics.json")
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "sample.parquet"
            sample.to_parquet(path, index=False)
            self.client.log_artifact(run_id, str(path), REFERENCE_ARTIFACTS)

    def download_reference(self, model_name: str, version: str, directory: str) -> Path:
        """Download the drift reference logged with a version (see ``log_reference``).

        Args:
            model_name: The registered model.
            version: The version.
            directory: A local directory to download into.

        Returns:
            The local ``reference`` directory (``statistics.json``, ``sample.parquet``).

        Raises:
            FileNotFoundError: The version's run has no reference (trained before drift
                monitoring existed).
        """
        from mlflow.exceptions import MlflowException

        run_id = self.client.get_model_version(model_name, version).run_id
        try:
            local = self.client.download_artifacts(str(run_id), REFERENCE_ARTIFACTS, directory)
        except (MlflowException, OSError) as error:
            raise FileNotFoundError(
                f"version {version} of '{model_name}' has no drift reference in MLflow run "
                f"{run_id} ({error}); retrain the model to record one"
            ) from None
        return Path(local)

    def version_metric(self, model_name: str, version: str, metric: str) -> float | None:
        """A test metric of a version, as its evaluation logged it (``test_<metric>``).

        Args:
            model_name: The registered model.
            version: The version.
            metric: The metric name (``roc_auc``, ``rmse``...).

        Returns:
            The value, or None when the version was never evaluated on it.
        """
        run_id = self.client.get_model_version(model_name, version).run_id
        if not run_id:
            return None
        value = self.client.get_run(run_id).data.metrics.get(f"test_{metric}")
        return None if value is None else float(value)

    def champion_version(self, model_name: str) -> str | None:
        """The version the ``champion`` alias points at (``registry.serving.champion_version``)."""
        return serving.champion_version(self.client, self.model_registry_uri, model_name)

    def champion_versions(self) -> dict[str, str]:
        """Every registered model's champion, in one search (``serving.champion_versions``)."""
        if not serving.local_store_exists(self.model_registry_uri):
            return {}  # before creating a client: MLflow's creates the SQLite file
        return serving.champion_versions(self.client, self.model_registry_uri)

    def set_champion(self, model_name: str, version: str) -> None:
        """Point the ``champion`` alias at ``version``.

        Args:
            model_name: The registered model.
            version: The version to make champion.
        """
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)

    def serving_state(self, model_name: str) -> ServingState:
        """The champion, the canary, its share and start (``registry.serving.serving_state``)."""
        return serving.serving_state(self.client, self.model_registry_uri, model_name)

    def set_canary(self, model_name: str, version: str, share: float, since: datetime) -> None:
        """Point the ``canary`` alias at ``version`` (``registry.serving.set_canary``)."""
        serving.set_canary(self.client, model_name, version, share, since)

    def clear_canary(self, model_name: str) -> None:
        """Remove the ``canary`` alias and its tags (``registry.serving.clear_canary``)."""
        serving.clear_canary(self.client, model_name)

    def version_tags(self, model_name: str, version: str) -> dict[str, str]:
        """Tags of a model version and of the run that produced it.

        Args:
            model_name: The registered model.
            version: The version.

        Returns:
            The run's tags updated with the version's own (the version's win on a clash).
        """
        model_version = self.client.get_model_version(model_name, version)
        run_id = model_version.run_id
        run_tags = self.client.get_run(run_id).data.tags if run_id else {}
        return {**run_tags, **model_version.tags}

    def tag_version(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on a model version (values are truncated to 5000 characters).

        Args:
            model_name: The registered model.
            version: The version.
            tags: Tag name to value.
        """
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, version, key, str(value)[:5000])

    def load_model(self, model_name: str, version: str) -> FittedModel:
        """Download a registered version and rebuild it through its flavor (no pickle is loaded).

        Args:
            model_name: The registered model.
            version: The version.

        Returns:
            The fitted model.
        """
        import mlflow.artifacts

        from ml_platform.training.flavors.registry import load_fitted

        # Not a models:/ URI: MLflow resolves those through its global registry URI.
        location = self.client.get_model_version_download_uri(model_name, version)
        with tempfile.TemporaryDirectory() as directory:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=directory, tracking_uri=self.tracking_uri
            )
            return load_fitted(Path(local) / "artifacts" / "model")

    def registered_versions(self, model_name: str) -> list[str]:
        """The registered versions of a model.

        Args:
            model_name: The registered model.

        Returns:
            Version numbers in ascending order; empty when the model has none.
        """
        versions = self.client.search_model_versions(f"name='{model_name}'")
        return sorted((str(v.version) for v in versions), key=int)


def _read_parquet(path: str) -> pd.DataFrame:
    """A parquet file or object as a DataFrame (a local path or an fsspec URL)."""
    import pandas as pd

    return pd.read_parquet(path)
