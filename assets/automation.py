"""When assets rebuild themselves: the policy of models that set ``retraining.automation``."""

from __future__ import annotations

from functools import cache

import dagster as dg

from ml_platform.spec.catalog import Catalog


@cache
def gated_automation() -> dg.AutomationCondition:
    """Rebuild when upstream data changes, but never past a failed blocking check upstream.

    One condition (an immutable value) shared by every automated asset.
    """
    return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def automated_feature_views(catalog: Catalog) -> set[str]:
    """The feature views used by at least one model whose spec turns on automation.

    Args:
        catalog: the loaded specs.

    Returns:
        Their names: these views rebuild themselves too, so that new data reaches the model.
    """
    return {
        view
        for name, model in catalog.models.items()
        if model.retraining.automation
        for view in catalog.resolved[name].feature_views
    }
