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


def _override_op(specs: dict[str, ModelSpec]) -> dg.OpDefinition:
    """The op every override job runs, under the node name ``<model>_override_champion``.

    One op for all models (building an op per model was a tenth of the time a code location
    with a hundred models spent loading); it finds its model's spec by its job's name.
    """

    @dg.op(name="override_champion")
    def override_champion(
        context: OpExecutionContext,
        config: OverrideConfig,
        registry: ModelRegistryResource,
        audit: AuditLogResource,
    ) -> None:
        """Move the champion alias to the given version, recording reason and requester."""
        from ml_platform.lifecycle.promote import override_promotion

        spec = specs[context.job_name]
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

    return override_champion


def build_override_job(spec: ModelSpec, op: dg.OpDefinition) -> dg.JobDefinition:
    """The job ``<model>_promote_override``: one op that moves the champion alias.

    Args:
        spec: the model's spec.
        op: the override op the catalog's jobs share (``_override_op``).

    Returns:
        The job; its run config (``OverrideConfig``, under the node
        ``<model>_override_champion``) names the version, reason and requester.
    """
    node = op.alias(f"{spec.name}_override_champion")

    @dg.job(
        name=override_job_name(spec.name),
        description=f"Force a version of {spec.name} to champion, bypassing the gates. "
        "Requires a reason; audited.",
        tags={MODEL_TAG: spec.name, OVERRIDE_TAG: "true"},
    )
    def override() -> None:
        node()

    return override


def build_override_jobs(catalog: Catalog) -> list[dg.JobDefinition]:
    """An override job per model of the catalog, all running one shared op."""
    specs = {override_job_name(spec.name): spec for spec in catalog.models.values()}
    op = _override_op(specs)
    return [build_override_job(spec, op) for spec in catalog.models.values()]
