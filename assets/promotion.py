"""The manual promotion override: a job, never a code change, with a required reason."""

import dagster as dg
from dagster import OpExecutionContext
from pydantic import Field

from assets.keys import MODEL_TAG, OVERRIDE_TAG, override_job_name
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.model import ModelSpec
from resources import AuditLogResource, ModelRegistryResource


class OverrideConfig(dg.Config):
    """Who forces which version to champion, and why (recorded in the audit log and MLflow)."""

    version: str = Field(description="The registered model version to make champion.")
    reason: str = Field(description="Why the gates should not apply (at least 15 characters).")
    requested_by: str = Field(description="Who takes responsibility for the override.")


def build_override_job(spec: ModelSpec) -> dg.JobDefinition:
    """The job ``<model>_promote_override``: one op that moves the champion alias.

    Args:
        spec: the model's spec.

    Returns:
        The job; its run config (``OverrideConfig``) names the version, reason and requester.
    """

    @dg.op(name=f"{spec.name}_override_champion")
    def override_champion(
        context: OpExecutionContext,
        config: OverrideConfig,
        registry: ModelRegistryResource,
        audit: AuditLogResource,
    ) -> None:
        """Move the champion alias to the given version, recording reason and requester."""
        from ml_platform.lifecycle.promote import override_promotion

        previous = override_promotion(
            spec,
            config.version,
            config.reason,
            config.requested_by,
            registry=registry.registry(),
            audit=audit.audit_log(),
            dagster_run_id=context.run.run_id,
        )
        context.log.warning(
            f"OVERRIDE: {spec.name} champion {previous} -> {config.version} by "
            f"{config.requested_by}: {config.reason}"
        )

    @dg.job(
        name=override_job_name(spec.name),
        description=f"Force a version of {spec.name} to champion, bypassing the gates. "
        "Requires a reason; audited.",
        tags={MODEL_TAG: spec.name, OVERRIDE_TAG: "true"},
    )
    def override() -> None:
        override_champion()

    return override


def build_override_jobs(catalog: Catalog) -> list[dg.JobDefinition]:
    """An override job per model of the catalog."""
    return [build_override_job(spec) for spec in catalog.models.values()]
