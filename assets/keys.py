"""Every name the graph is built from: asset keys, groups, tags, job, schedule and check names.

Asset key paths are a contract (``../shared/DESIGN.md``): ``sources/<source>``,
``features/<view>`` and ``<model>/<asset>`` for each of ``MODEL_ASSETS``. Sensors, schedules and
the command line import their names from here, so a name is written once.
"""

from __future__ import annotations

import dagster as dg

SOURCES_GROUP = "sources"
FEATURES_GROUP = "features"
INVALID_SPECS_GROUP = "invalid_specs"

MODEL_ASSETS = ("training_set", "model", "evaluation", "champion", "predictions")
"""The assets of every model, upstream first; the asset group is the model's name."""
TRAINING_ASSETS = MODEL_ASSETS[:-1]
"""The model assets a training run builds (scoring builds ``predictions``)."""

MODEL_TAG = "ml_platform/model"
"""Run and schedule tag naming the model a run works on (read by the failure alerts)."""
OVERRIDE_TAG = "ml_platform/override"
"""Run tag marking a manual promotion override."""

DATA_GATE = "data_quality"
DATA_GATE_DESCRIPTION = (
    "Great Expectations suite (spec gates.data plus schema defaults) on this data. Blocking: "
    "nothing downstream runs on data that fails it."
)
EVALUATION_GATE_DESCRIPTIONS = {
    "metrics_meet_thresholds": "Test metrics meet the spec's gates.evaluation.min/max.",
    "no_regression_vs_champion": "No metric is worse than the champion's on the same test rows "
    "beyond gates.evaluation.max_regression (default: primary metric, 0.01).",
    "slices_meet_thresholds": "Every slice meets its minimums; the gap between slices stays "
    "within gates.evaluation.slices[].max_disparity (fairness).",
    "latency_within_bound": "Scoring latency per 1k rows is within "
    "gates.evaluation.max_latency_ms_per_1k_rows.",
}
"""What each evaluation gate (a blocking check of ``<model>/evaluation``) asserts."""


def source_key(source: str) -> dg.AssetKey:
    """The key of a source's asset.

    Args:
        source: the source's name in its feature repository spec.

    Returns:
        ``sources/<source>``.
    """
    return dg.AssetKey(["sources", source])


def feature_key(view: str) -> dg.AssetKey:
    """The key of a Feast feature view's asset, shared by every model that uses the view.

    Args:
        view: the feature view's name.

    Returns:
        ``features/<view>``.
    """
    return dg.AssetKey(["features", view])


def model_key(model: str, asset: str) -> dg.AssetKey:
    """The key of one of a model's assets.

    Args:
        model: the model's name.
        asset: one of ``MODEL_ASSETS``.

    Returns:
        ``<model>/<asset>``.
    """
    return dg.AssetKey([model, asset])


def invalid_spec_key(spec_file: str, index: int) -> dg.AssetKey:
    """The key of the placeholder asset shown for a spec file that failed to load.

    Args:
        spec_file: the path of the invalid file.
        index: the error's position among the catalog's errors (keeps keys unique).

    Returns:
        ``invalid_specs/<file stem>_<index>``, the stem reduced to letters, digits and ``_``.
    """
    stem = spec_file.rsplit("/", 1)[-1].split(".")[0]
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in stem) or "spec"
    return dg.AssetKey([INVALID_SPECS_GROUP, f"{safe}_{index}"])


def training_job_name(model: str) -> str:
    """The job that builds features and the training set, trains, evaluates and promotes."""
    return f"{model}_training"


def scoring_job_name(model: str) -> str:
    """The job that scores the newest data with the champion."""
    return f"{model}_scoring"


def override_job_name(model: str) -> str:
    """The job that forces a version to champion, bypassing the gates."""
    return f"{model}_promote_override"


def retraining_schedule_name(model: str) -> str:
    """The schedule that runs the training job on the spec's ``retraining.schedule``."""
    return f"{model}_retraining_schedule"


def new_labels_sensor_name(model: str) -> str:
    """The sensor that runs the training job when the model's label source changes."""
    return f"{model}_new_labels_sensor"
