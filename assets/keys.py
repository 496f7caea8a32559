"""Every name the graph is built from: asset keys, groups, tags, job, schedule and check names.

Asset key paths are a contract (``../shared/DESIGN.md``): ``sources/<source>``,
``features/<view>`` and ``<model>/<asset>`` for each of ``MODEL_ASSETS``. Sensors, schedules and
the command line import their names from here, so a name is written once.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

SOURCES_GROUP = "sources"
FEATURES_GROUP = "features"
INVALID_SPECS_GROUP = "invalid_specs"

MODEL_ASSETS = (
    "training_set",
    "model",
    "evaluation",
    "champion",
    "predictions",
    "drift_report",
    "deployment",
)
"""The assets of every model, upstream first; the asset group is the model's name."""
TRAINING_ASSETS = ("training_set", "model", "evaluation", "champion")
"""The model assets a training run builds (scoring builds ``predictions``)."""
MONITORING_ASSETS = ("predictions", "drift_report")
"""The model assets a monitoring run builds: score the newest data, then report its drift."""
DEPLOYMENT_ASSET = "deployment"
"""The model asset recording what the prediction service serves (champion, canary, share);
built by the canary job and sensor only, never by training or automation."""

MODEL_TAG = "ml_platform/model"
"""Run and schedule tag naming the model a run works on (read by the failure alerts)."""
TRAINING_TAG = "ml_platform/training"
"""Run tag naming the model a run trains: on the training job, and added by the model step to
any run that executes it (the run queue limits runs per value with ``tag_concurrency_limits``)."""
OVERRIDE_TAG = "ml_platform/override"
"""Run tag marking a manual promotion override."""
FORCE_RETRAIN_TAG = "ml_platform/force_retrain"
"""Run tag that makes the model step train and register a new version (value ``true``) even
when a version with the same data snapshot, parameters and code version exists."""

DATA_GATE = "data_quality"
DATA_GATE_DESCRIPTION = (
    "Great Expectations suite (spec gates.data plus schema defaults) on this data. Blocking: "
    "nothing downstream runs on data that fails it."
)
NO_SIGNIFICANT_DRIFT = "no_significant_drift"
NO_SIGNIFICANT_DRIFT_DESCRIPTION = (
    "The scored window has not drifted from the champion's training reference: fewer than "
    "monitoring.drift_share of the inputs drifted, the prediction did not drift, and the primary "
    "metric on newly labelled rows did not drop past monitoring.retrain_on.performance_drop. "
    "Severity WARN: drift does not block scoring; a window too small for a verdict passes."
)
FRESH_WITHIN_TTL = "fresh_within_ttl"
FRESH_WITHIN_TTL_DESCRIPTION = (
    "The newest event in the view's source is younger than the view's TTL: older features are "
    "no longer served online and stale data is joined into training sets. Severity WARN: it "
    "blocks nothing; it reads the source's newest timestamp, the staleness in hours and the TTL."
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


def _model_name(suffix: str, doc: str) -> Callable[[str], str]:
    """A function naming a model's Dagster object ``<model>_<suffix>``, documented by ``doc``."""

    def name(model: str) -> str:
        return f"{model}_{suffix}"

    name.__doc__ = doc
    return name


training_job_name = _model_name(
    "training", "The job that builds features and the training set, trains, evaluates and promotes."
)


scoring_job_name = _model_name("scoring", "The job that scores the newest data with the champion.")


override_job_name = _model_name(
    "promote_override", "The job that forces a version to champion, bypassing the gates."
)


retraining_schedule_name = _model_name(
    "retraining_schedule",
    "The schedule that runs the training job on the spec's ``retraining.schedule``.",
)


new_labels_sensor_name = _model_name(
    "new_labels_sensor",
    "The sensor that runs the training job when the model's label source changes.",
)


DRIFT_EVENT_TAG = "ml_platform/drift_event"
"""Run tag of a drift-triggered training run: the drift report or external alert id."""
DRIFT_REASONS_TAG = "ml_platform/drift_reasons"
"""Run tag of a drift-triggered training run: what fired (``retrain_on`` triggers, alerts)."""


monitoring_job_name = _model_name(
    "monitoring",
    "The job that scores the newest data and reports its drift (predictions + drift_report).",
)


monitoring_schedule_name = _model_name(
    "monitoring_schedule",
    "The schedule that runs the monitoring job on the spec's ``monitoring.schedule``.",
)


scoring_schedule_name = _model_name(
    "scoring_schedule", "The schedule that runs the scoring job on the spec's ``scoring.schedule``."
)


drift_sensor_name = _model_name(
    "drift_sensor",
    "The sensor that runs the training job when drift crosses ``monitoring.retrain_on``.",
)


CANARY_DECISION_TAG = "ml_platform/canary_decision"
"""Run tag of a canary sensor's run: ``<version>:<start>:<action>``, one run per decision."""


def start_canary_job_name(model: str) -> str:
    """The job that starts a canary of the newest gated version (``M/deployment``).

    Args:
        model: the model's name.

    Returns:
        ``start_canary_<model>``.
    """
    return f"start_canary_{model}"


def canary_sensor_name(model: str) -> str:
    """The sensor that promotes or rolls back a running canary from its live figures.

    Args:
        model: the model's name.

    Returns:
        ``canary_<model>``.
    """
    return f"canary_{model}"
