"""A model version's drift reference: computed once when it is trained, read when it is monitored.

The reference is the training split's model inputs and the version's predictions on the
validation split, summarized by ``ml_platform.monitoring.reference.compute_reference``, plus a
bounded sample of the training inputs for Evidently's HTML report. It is stored twice: as
artifacts of the version's MLflow training run (``reference/statistics.json``,
``reference/sample.parquet``) and under the artifact root
(``models/<model>/reference/<version>/``), which monitoring reads first. Monitoring never
recomputes it from training data.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_platform.core import storage
from ml_platform.core.settings import PlatformSettings
from ml_platform.lifecycle.records import model_root
from ml_platform.monitoring.reference import ReferenceStatistics, compute_reference, sample_rows
from ml_platform.registry.client import ModelRegistry

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.training.flavors.base import FittedModel
    from ml_platform.training.schema import FeatureSchema

REFERENCE_SAMPLE_ROWS = 5_000
"""Training rows kept for the drift report's reference side (a seeded sample)."""


@dataclass(frozen=True)
class VersionReference:
    """The drift reference of one model version.

    Attributes:
        statistics: Per input column and for the predictions, what a drift verdict needs.
        sample: A bounded sample of the training inputs (for Evidently's HTML report).
    """

    statistics: ReferenceStatistics
    sample: pd.DataFrame


def reference_root(settings: PlatformSettings, model: str, version: str) -> str:
    """Where a version's reference lives under the artifact root.

    Args:
        settings: The platform settings.
        model: The model name.
        version: The registered version.

    Returns:
        ``<artifact_root>/models/<model>/reference/<version>``.
    """
    return model_root(settings, model, "reference", version)


def compute_version_reference(
    schema: FeatureSchema,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    model: FittedModel,
) -> VersionReference:
    """The reference of a freshly trained version: its training inputs and validation output.

    Args:
        schema: The model's numeric and categorical inputs.
        train: The training split (the inputs' reference).
        validation: The validation split (the model's output on it is the predictions'
            reference).
        model: The fitted model.

    Returns:
        The statistics and a seeded sample of at most ``REFERENCE_SAMPLE_ROWS`` training rows.
    """
    numeric, categorical = list(schema.numeric), list(schema.categorical)
    inputs = train.loc[:, [*numeric, *categorical]]
    predictions = model.predict(validation) if len(validation) else None
    statistics = compute_reference(inputs, numeric, categorical, predictions=predictions)
    return VersionReference(statistics, sample_rows(inputs, REFERENCE_SAMPLE_ROWS))


def store_reference(
    reference: VersionReference,
    *,
    settings: PlatformSettings,
    registry: ModelRegistry,
    model: str,
    version: str,
    run_id: str,
) -> str:
    """Store a version's reference under the artifact root and with its MLflow run.

    Args:
        reference: The reference computed at training time.
        settings: The platform settings (the artifact root).
        registry: The MLflow backend.
        model: The model name.
        version: The registered version.
        run_id: The version's training run.

    Returns:
        The directory under the artifact root.
    """
    statistics = reference.statistics.to_dict()
    directory = reference_root(settings, model, version)
    storage.write_parquet(reference.sample, f"{directory}/sample.parquet")
    storage.write_json(f"{directory}/statistics.json", statistics)
    registry.log_reference(run_id, statistics, reference.sample)
    return directory


def load_reference(
    settings: PlatformSettings, registry: ModelRegistry, model: str, version: str
) -> VersionReference:
    """The reference stored with a version: from the artifact root, else from its MLflow run.

    Args:
        settings: The platform settings.
        registry: The MLflow backend (when the artifact root lacks the reference).
        model: The model name.
        version: The registered version.

    Returns:
        The version's reference statistics and sample.

    Raises:
        FileNotFoundError: The version has no reference (it was trained before drift
            monitoring existed): retrain it.
    """
    directory = reference_root(settings, model, version)
    if storage.exists(f"{directory}/statistics.json"):
        return VersionReference(
            ReferenceStatistics.from_dict(storage.read_json(f"{directory}/statistics.json")),
            storage.read_parquet(f"{directory}/sample.parquet"),
        )
    with tempfile.TemporaryDirectory() as local:
        downloaded = registry.download_reference(model, version, local)
        return VersionReference(
            ReferenceStatistics.from_dict(storage.read_json(str(downloaded / "statistics.json"))),
            storage.read_parquet(str(downloaded / "sample.parquet")),
        )
