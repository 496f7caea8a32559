"""Names the platform writes to MLflow: run, version and model tags, and the aliases.

Run tags make a version reproducible (code version, data snapshot, compute profile, Dagster run);
version tags record what happened to it afterwards (gates, promotion, overrides); the registered
model's tags say how its aliases serve (the canary's traffic share and start).
"""

from __future__ import annotations

CHAMPION_ALIAS = "champion"
# The version serving a share of the online traffic beside the champion, while it is judged.
CANARY_ALIAS = "canary"

# Registered-model tags of a running canary: its traffic share ("0.2") and since when it runs
# (ISO-8601 UTC). Read with the aliases in one call (``ModelRegistry.serving_state``).
TAG_CANARY_SHARE = "ml_platform.canary_traffic_share"
TAG_CANARY_SINCE = "ml_platform.canary_since"

# Run tags, set when the training run starts.
TAG_DAGSTER_RUN = "dagster_run_id"  # the tag dagster-mlflow uses, so its tooling finds our runs
# A link to that Dagster run in the Dagster UI, on the training run and on its version.
TAG_DAGSTER_RUN_URL = "dagster_run_url"
TAG_CODE_VERSION = "ml_platform.code_version"
TAG_SNAPSHOT = "ml_platform.data_snapshot_id"
TAG_PROFILE = "ml_platform.compute_profile"
TAG_FEATURE_REFS = "ml_platform.feature_refs"
TAG_MODEL = "ml_platform.model"
TAG_OWNER = "ml_platform.owner"
# What was trained (snapshot + params, hashed): with the Dagster run, a retry finds its version.
TAG_TRAINING_KEY = "ml_platform.training_key"

# MLflow's own run tags that the platform fills in.
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_SOURCE_NAME = "mlflow.source.name"  # the run's "Source" in the UI: its Dagster run
MLFLOW_SOURCE_TYPE = "mlflow.source.type"

# Version tags, set after registration.
TAG_MLFLOW_RUN_ID = "mlflow_run_id"
TAG_FIT = "ml_platform.fit"  # the fit's facts (JSON), set with the registration
TAG_PROMOTION = "ml_platform.promotion"
TAG_PROMOTION_REASON = "ml_platform.promotion_reason"
TAG_GATE_PREFIX = "ml_platform.gate."
TAG_OVERRIDE_REASON = "ml_platform.override_reason"
TAG_OVERRIDE_BY = "ml_platform.override_by"
TAG_OVERRIDE_RUN = "ml_platform.override_run"


def gate_tag(gate: str) -> str:
    """The version tag holding the verdict of evaluation gate ``gate``.

    Args:
        gate: The gate's name, e.g. ``min_roc_auc``.

    Returns:
        ``ml_platform.gate.<gate>``.
    """
    return f"{TAG_GATE_PREFIX}{gate}"
