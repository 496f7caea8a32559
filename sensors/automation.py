"""The sensor that evaluates automation conditions, for models with ``retraining.automation``."""

from __future__ import annotations

import dagster as dg

from ml_platform.spec.catalog import Catalog

AUTOMATION_SENSOR = "ml_platform_automation"


def build_automation_sensors(catalog: Catalog) -> list[dg.AutomationConditionSensorDefinition]:
    """One automation-condition sensor over the whole graph, when any model turns automation on.

    Args:
        catalog: the loaded specs.

    Returns:
        The sensor (running by default), or nothing when no spec sets ``retraining.automation``.
    """
    if not any(spec.retraining.automation for spec in catalog.models.values()):
        return []
    return [
        dg.AutomationConditionSensorDefinition(
            AUTOMATION_SENSOR,
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            description="Evaluates the models' automation conditions (retraining.automation).",
        )
    ]
