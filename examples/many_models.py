"""Many models on the payments example: copies of its fraud_detection spec under other names.

The load-time bench and the many-models test put them on ``ML_PLATFORM_SPEC_PATH``, beside the
shipped example. The copies vary what makes a code location grow per model: the flavor (torch
or xgboost), the schedules (retraining, monitoring, scoring), declarative automation and
``monitoring.retrain_on``, so every kind of per-model job, schedule and sensor exists.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

EXAMPLE_SPEC = Path(__file__).resolve().parent.parent / "assets" / "fraud_detection" / "model.yaml"
XGBOOST_PARAMS = {"n_estimators": 50, "max_depth": 4}


def model_document(base: dict[str, Any], index: int) -> dict[str, Any]:
    """The ``index``-th copy of the example spec, named ``fraud_detection_<index>``.

    Args:
        base: the example's spec document.
        index: the copy's number; it decides the variations (every fourth is xgboost, every
            third has no retraining schedule, every fifth turns automation on, ...).

    Returns:
        A model spec document.
    """
    document = copy.deepcopy(base)
    document["name"] = f"fraud_detection_{index:03d}"
    if index % 4 == 1:
        document["model"] = {"flavor": "xgboost", "params": XGBOOST_PARAMS}
        document["training"] = {"positive_class_weight": "balanced"}
    if index % 3 == 0:
        document["retraining"] = {"schedule": None}
    if index % 5 == 2:
        document.setdefault("retraining", {})["automation"] = True
    if index % 2 == 0:
        document["scoring"] = {**document.get("scoring", {}), "schedule": "0 5 * * *"}
    monitoring = document.setdefault("monitoring", {})
    if index % 3 == 1:
        monitoring.pop("retrain_on", None)
    if index % 7 == 3:
        monitoring.pop("schedule", None)
    return document


def write_model_specs(directory: Path, count: int) -> list[Path]:
    """Write ``count`` copies of the example model spec into ``directory``.

    Args:
        directory: where the YAML files go (created if missing).
        count: how many copies.

    Returns:
        The files written, one per model.
    """
    directory.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(EXAMPLE_SPEC.read_text())
    written = []
    for index in range(1, count + 1):
        path = directory / f"fraud_detection_{index:03d}.yaml"
        path.write_text(yaml.safe_dump(model_document(base, index), sort_keys=False))
        written.append(path)
    return written
