"""``<model>/deployment``: what the prediction service serves, and the canary's fate.

A materialization records what is live (champion, canary, traffic share, since when) and, while
a canary runs, its live figures and the decision they lead to, with the reasons, so the catalog
shows why a canary was promoted or rolled back. Its config's ``action`` says what else it does:
``record`` (the default) only records; ``start_canary`` starts a canary (the job
``start_canary_<model>``); ``decide`` carries out the decision (what the canary sensor requests);
``rollback`` removes the canary by hand. The asset is built by those runs only: no training job
selects it and it has no automation condition.
"""

from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from dagster import AssetExecutionContext
from pydantic import Field

from assets.jobs import scoped_asset_job
from assets.keys import (
    DEPLOYMENT_ASSET,
    MODEL_TAG,
    model_key,
    start_canary_job_name,
)
from assets.metadata import owners, readable
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.model import ModelSpec
from resources import LifecycleResource

if TYPE_CHECKING:
    from ml_platform.lifecycle.deploy import DeploymentState
    from ml_platform.lifecycle.live_figures import CanaryDecision, CanaryFigures

DEPLOYMENT_DESCRIPTION = (
    "What the prediction service serves: the champion and a canary with its traffic share, "
    "since when; a canary's live figures and why it was promoted or rolled back."
)
DeploymentAction = Literal["record", "start_canary", "decide", "rollback"]


class DeploymentConfig(dg.Config):
    """What a materialization of ``<model>/deployment`` does besides recording what is live."""

    action: DeploymentAction = Field(
        default="record",
        description="record: show what is live; start_canary: serve a gated version to a share "
        "of the traffic; decide: promote or roll back the canary from its live figures; "
        "rollback: remove the canary by hand.",
    )
    version: str | None = Field(
        default=None,
        description="start_canary: the version; empty takes the newest version whose "
        "evaluation gates passed that is not the champion.",
    )
    share: float | None = Field(
        default=None,
        description="start_canary: the canary's traffic share in (0, 1); empty takes the "
        "spec's serving.canary.traffic_share.",
    )
    reason: str = Field(
        default="", description="rollback: why the canary is removed (recorded in the audit log)."
    )


def deployment_op_name(model: str) -> str:
    """The op name of ``<model>/deployment`` (its run config lives under ``ops.<name>``)."""
    return model_key(model, DEPLOYMENT_ASSET).to_python_identifier()


def deployment_run_config(model: str, action: DeploymentAction) -> dg.RunConfig:
    """Run config materializing ``<model>/deployment`` with ``action``."""
    return dg.RunConfig(ops={deployment_op_name(model): DeploymentConfig(action=action)})


def _reasons(reasons: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {reason}" for reason in reasons) or "-")


def figures_table(figures: "CanaryFigures") -> dg.MetadataValue:
    """The canary's and the champion's live figures, one row per role."""
    rows = figures.table()
    columns = list(rows[0])
    kinds = {"role": "string", "version": "string", "calls": "int", "labelled_calls": "int"}
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kinds.get(name, "float")) for name in columns]
    )
    records = [
        dg.TableRecord({name: readable(row).get(name, "") for name in columns}) for row in rows
    ]
    return dg.MetadataValue.table(records, schema=schema)


def deployment_metadata(
    state: "DeploymentState",
    *,
    action: str,
    figures: "CanaryFigures | None" = None,
    decision: "CanaryDecision | None" = None,
    outcome: list[str] | None = None,
) -> dict[str, Any]:
    """What is live, and the canary's figures, decision and reasons when one ran.

    Args:
        state: The deployment after the action.
        action: The config's action.
        figures: The canary's live figures, if one ran.
        decision: The decision on them, if any.
        outcome: What the action did, one line each.

    Returns:
        The metadata.
    """
    metadata: dict[str, Any] = {
        "action": action,
        "champion_version": state.champion,
        "canary_version": state.canary,
        "canary_traffic_share": state.canary_share if state.canary else None,
        "canary_since": state.canary_since,
        "champion_traffic_share": state.champion_share,
    }
    if figures is not None:
        metadata |= {
            "canary_figures": figures_table(figures),
            "prediction_shift": figures.prediction_shift,
            "latency_ratio": figures.latency_ratio,
            "measured_since": figures.since,
        }
        if figures.notes:
            metadata["not_measured"] = _reasons(figures.notes)
    if decision is not None:
        metadata |= {"decision": decision.action, "reasons": _reasons(decision.reasons)}
    if outcome:
        metadata["outcome"] = _reasons(outcome)
    return readable(metadata)


def build_deployment_asset(model: ModelSpec, catalog: Catalog) -> dg.AssetsDefinition:
    """``<model>/deployment``: what is live; starts, promotes or rolls back a canary.

    Args:
        model: the model's spec (``serving.canary``).
        catalog: the loaded specs (the label source, for the canary's performance).

    Returns:
        The asset (no automation condition: only its job, the sensor and people build it).
    """

    def deployment(
        context: AssetExecutionContext, config: DeploymentConfig, lifecycle: LifecycleResource
    ) -> dg.MaterializeResult:
        """What the prediction service serves, and the canary's figures and decision."""
        from ml_platform.lifecycle.canary import canary_figures, decide_canary
        from ml_platform.lifecycle.deploy import (
            CanaryError,
            deployment_state,
            promote_canary,
            rollback_canary,
            start_canary,
        )

        step = lifecycle.step(context)
        outcome: list[str] = []
        figures = decision = None
        try:
            if config.action == "start_canary":
                state = start_canary(model, step, version=config.version, share=config.share)
                outcome.append(f"canary v{state.canary} started at {state.canary_share:.0%}")
            elif config.action == "rollback":
                who = context.run.tags.get("user") or "a person"
                why = config.reason.strip() or f"rolled back by hand (run {context.run.run_id})"
                figures = canary_figures(model, step, catalog=catalog)
                state = rollback_canary(model, step, [f"{why} ({who})"], figures=figures)
                outcome.append("canary rolled back by hand")
        except CanaryError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        if config.action in ("record", "decide"):
            figures = canary_figures(model, step, catalog=catalog)
            if figures is not None:
                decision = decide_canary(model, figures)
            live = deployment_state(model, step)
            if config.action == "decide":
                if figures is None and live.canary is not None:
                    outcome.append(f"canary v{live.canary} was not started by the platform")
                    rollback_canary(model, step, ["no canary_started entry in the audit log"])
                elif figures is not None and live.canary != figures.canary.version:
                    # The alias was removed or moved outside the platform: close the record.
                    rollback_canary(
                        model, step, [f"the canary alias is {live.canary}, not the one started"]
                    )
                    outcome.append("canary closed: its alias changed outside the platform")
                elif figures is not None and decision is not None:
                    if decision.action == "promote":
                        promotion, _ = promote_canary(model, step, figures, decision)
                        outcome.append(
                            f"canary v{figures.canary.version} promoted to champion"
                            if promotion.promote
                            else "not promoted: " + "; ".join(promotion.reasons)
                        )
                    elif decision.action == "rollback":
                        rollback_canary(model, step, decision.reasons, figures=figures)
                        outcome.append(f"canary v{figures.canary.version} rolled back")
                    else:
                        outcome.append("waiting: the canary keeps serving")
                else:
                    outcome.append("no canary runs: nothing to decide")
            elif decision is not None:
                outcome.append(f"recorded only: the canary sensor carries out '{decision.action}'")
        state = deployment_state(model, step)
        for line in outcome:
            context.log.info(line)
        return dg.MaterializeResult(
            metadata=deployment_metadata(
                state, action=config.action, figures=figures, decision=decision, outcome=outcome
            )
        )

    # The description is passed explicitly: a docstring left in place would be parsed again
    # (see assets.models._model_asset), a cost paid per model at load.
    deployment.__doc__ = None
    return dg.asset(
        key=model_key(model.name, DEPLOYMENT_ASSET),
        deps=[model_key(model.name, "champion")],
        group_name=model.name,
        description=DEPLOYMENT_DESCRIPTION,
        owners=owners(model.owner),
        kinds={"mlflow"},
    )(deployment)


def build_deployment_assets(catalog: Catalog) -> list[dg.AssetsDefinition]:
    """A ``<model>/deployment`` asset per model of the catalog."""
    return [build_deployment_asset(model, catalog) for model in catalog.models.values()]


def build_start_canary_jobs(catalog: Catalog) -> list[Any]:
    """Per model, the job ``start_canary_<model>``: ``<model>/deployment``, action start_canary.

    Its run config can name the version and share (``DeploymentConfig``) in the launchpad.

    Args:
        catalog: the loaded specs.

    Returns:
        The jobs.
    """
    return [
        scoped_asset_job(
            start_canary_job_name(name),
            selection=dg.AssetSelection.assets(model_key(name, DEPLOYMENT_ASSET)),
            config=deployment_run_config(name, "start_canary"),
            description=f"Serve the newest version of {name} whose evaluation gates passed to "
            "a share of the traffic (spec serving.canary.traffic_share); the canary sensor "
            "then promotes or rolls it back from its live figures.",
            tags={MODEL_TAG: name},
        )
        for name in catalog.models
    ]
