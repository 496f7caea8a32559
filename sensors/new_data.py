"""New-data sensors: retrain a model when its label source changes."""

from __future__ import annotations

import dagster as dg

from assets.keys import MODEL_TAG, new_labels_sensor_name, training_job_name
from ml_platform.spec.catalog import Catalog
from resources import StorageResource


def build_new_labels_sensor(catalog: Catalog, model: str) -> dg.SensorDefinition:
    """A sensor that requests a training run when the model's label source file changes.

    Args:
        catalog: the loaded specs.
        model: the model's name.

    Returns:
        The sensor (stopped by default); its cursor is the label file's fingerprint, its run key
        ``<model>-<fingerprint>`` so each version of the file trains once.
    """
    spec = catalog.models[model]
    _, source = catalog.sources()[spec.label.source]

    @dg.sensor(
        name=new_labels_sensor_name(model),
        job_name=training_job_name(model),
        minimum_interval_seconds=300,
        description=f"Retrain {model} when its label source '{source.name}' changes.",
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def new_labels(
        context: dg.SensorEvaluationContext, storage: StorageResource
    ) -> dg.RunRequest | dg.SkipReason:
        from ml_platform.core.storage import fingerprint
        from ml_platform.features.store import source_path

        version = fingerprint(source_path(storage.settings(), source.path))
        if version is None:
            return dg.SkipReason(f"label source '{source.name}' does not exist yet")
        if version == context.cursor:
            return dg.SkipReason(f"label source '{source.name}' unchanged")
        context.update_cursor(version)
        return dg.RunRequest(run_key=f"{model}-{version}", tags={MODEL_TAG: model})

    return new_labels


def build_new_data_sensors(catalog: Catalog) -> list[dg.SensorDefinition]:
    """A new-labels sensor per model of the catalog."""
    return [build_new_labels_sensor(catalog, name) for name in catalog.models]
