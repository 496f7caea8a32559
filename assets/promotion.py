"""The manual promotion override: a job, never a code change, with a required reason."""

import dagster as dg
from dagster import OpExecutionContext
from pydantic import Field

from ml_platform.spec import Catalog, ModelSpec
from resources import PlatformResource


class OverrideConfig(dg.Config):
    """Who forces which version to champion, and why (recorded in the audit log and MLflow)."""

    version: str = Field(description="The registered model version to make champion.")
    reason: str = Field(description="Why the gates should not apply (at least 15 characters).")
    requested_by: str = Field(description="Who takes responsibility for the override.")


def override_job_name(model: str) -> str:
    return f"{model}_promote_override"


def _override_job(spec: ModelSpec) -> dg.JobDefinition:
    @dg.op(name=f"{spec.name}_override_champion")
    def override_champion(
        context: OpExecutionContext, config: OverrideConfig, platform: PlatformResource
    ) -> None:
        """Move the champion alias to the given version, recording reason and requester."""
        from ml_platform.lifecycle import override_promotion

        previous = override_promotion(
            spec,
            platform.settings(),
            config.version,
            config.reason,
            config.requested_by,
            context.run.run_id,
        )
        context.log.warning(
            f"OVERRIDE: {spec.name} champion {previous} -> {config.version} by "
            f"{config.requested_by}: {config.reason}"
        )

    @dg.job(
        name=override_job_name(spec.name),
        description=f"Force a version of {spec.name} to champion, bypassing the gates. "
        "Requires a reason; audited.",
        tags={"ml_platform/model": spec.name, "ml_platform/override": "true"},
    )
    def override() -> None:
        override_champion()

    return override


def build_override_jobs(catalog: Catalog) -> list[dg.JobDefinition]:
    return [_override_job(spec) for spec in catalog.models.values()]
