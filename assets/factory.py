"""Asset factories: the lineage graph built from the specs.

For each feature repo: ``sources/<source>`` (generated, or external) and ``features/<view>``.
For each model ``M``: ``M/training_set`` -> ``M/model`` -> ``M/evaluation`` -> ``M/champion``
-> ``M/predictions``. The bodies are thin: the work is done by ``ml_platform`` functions, imported
inside the bodies so that loading the code location stays fast.
"""

from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from ml_platform.compute import load_profiles, op_tags, pool
from ml_platform.evaluation import EVALUATION_GATES
from ml_platform.settings import deployment
from ml_platform.spec import Catalog, FeatureRepoSpec, ModelSpec, SpecError
from resources import PlatformResource

FEATURES_GROUP = "features"
SOURCES_GROUP = "sources"


def source_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["sources", name])


def feature_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["features", name])


def model_key(model: str, asset: str) -> dg.AssetKey:
    return dg.AssetKey([model, asset])


MODEL_ASSETS = ("training_set", "model", "evaluation", "champion", "predictions")
GATE_DESCRIPTIONS = {
    "metrics_meet_thresholds": "Test metrics meet the spec's gates.evaluation.min/max.",
    "no_regression_vs_champion": "No metric is worse than the champion's on the same test rows "
    "beyond gates.evaluation.max_regression (default: primary metric, 0.01).",
    "slices_meet_thresholds": "Every slice meets its minimums; the gap between slices stays "
    "within gates.evaluation.slices[].max_disparity (fairness).",
    "latency_within_bound": "Scoring latency per 1k rows is within "
    "gates.evaluation.max_latency_ms_per_1k_rows.",
}


DATA_GATE = "data_quality"
DATA_GATE_DESCRIPTION = (
    "Great Expectations suite (spec gates.data plus schema defaults) on this data. Blocking: "
    "nothing downstream runs on data that fails it."
)


def gate_check_result(report: Any) -> dg.AssetCheckResult:
    """A data gate's report as a blocking check result, with the failing expectations."""
    failed = report.failed()
    table = ["| expectation | observed | unexpected | sample |", "|---|---|---|---|"]
    for outcome in failed[:20]:
        table.append(
            f"| {outcome.describe()} | {str(outcome.observed_value)[:80]} | "
            f"{outcome.unexpected_count if outcome.unexpected_count is not None else ''} | "
            f"{', '.join(map(str, outcome.sample[:5]))[:80]} |"
        )
    return dg.AssetCheckResult(
        check_name=DATA_GATE,
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.summary()[:1000],
        metadata={
            "rows": report.rows,
            "expectations": len(report.outcomes),
            "failed_expectations": len(failed),
            "engine": report.engine,
            "seconds": round(report.seconds, 3),
            "failures": dg.MetadataValue.md("\n".join(table) if failed else "none"),
            "outcomes": dg.MetadataValue.json(report.to_metadata()["outcomes"]),
            **(
                {"data_docs": dg.MetadataValue.path(report.data_docs_path)}
                if report.data_docs_path
                else {}
            ),
        },
    )


def _json_safe(value: Any) -> Any:
    """NaN and infinities become strings: JSON metadata cannot hold them."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def _generator_asset(repo: FeatureRepoSpec) -> dg.AssetsDefinition:
    assert repo.generator is not None
    generator = repo.generator

    @dg.multi_asset(
        name=f"generate_{repo.name}_sources",
        specs=[
            dg.AssetSpec(
                source_key(source.name),
                description=source.description or f"Source '{source.name}' of {repo.name}.",
                group_name=SOURCES_GROUP,
                kinds={"parquet"},
                metadata={"path": source.path, "generator": generator.function},
            )
            for source in repo.sources
        ],
    )
    def generate_sources(context: AssetExecutionContext, platform: PlatformResource) -> Any:
        """Run the repo's data generator, writing every source's parquet file."""
        from ml_platform.generation import run_generator

        settings = platform.settings()
        counts = run_generator(repo, settings)
        for source in repo.sources:
            yield dg.MaterializeResult(
                asset_key=source_key(source.name),
                metadata={
                    "rows": counts.get(source.name, 0),
                    "path": settings.data_path(source.path),
                    "params": dg.MetadataValue.json(dict(generator.params)),
                },
            )
        context.log.info(f"generated {counts}")

    return generate_sources


def gated_automation() -> dg.AutomationCondition:
    """Rebuild when upstream data changes, but never past a failed blocking check upstream."""
    return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def _feature_view_asset(
    repo: FeatureRepoSpec, view_name: str, automated: bool = False
) -> dg.AssetsDefinition:
    view = next(v for v in repo.feature_views if v.name == view_name)

    key = feature_key(view.name)

    @dg.asset(
        key=key,
        deps=[source_key(view.source)],
        check_specs=[
            dg.AssetCheckSpec(
                DATA_GATE, asset=key, blocking=True, description=DATA_GATE_DESCRIPTION
            )
        ],
        group_name=FEATURES_GROUP,
        kinds={"feast"},
        automation_condition=gated_automation() if automated else None,
        description=view.description
        or f"Feast feature view '{view.name}' ({', '.join(view.features)}), TTL {view.ttl}.",
        metadata={"feature_repo": repo.name, "ttl": view.ttl, "features": ", ".join(view.features)},
    )
    def feature_view(
        context: AssetExecutionContext, platform: PlatformResource
    ) -> dg.MaterializeResult:
        """Gate the view's data, apply the Feast definitions, materialize it online."""
        from ml_platform.features import materialize_feature_view

        summary, report = materialize_feature_view(repo, view.name, platform.settings())
        check = gate_check_result(report)
        if summary is None:
            context.log.error(report.summary())
            return dg.MaterializeResult(
                metadata={"gate": "failed: not applied or materialized"}, check_results=[check]
            )
        freshness = summary.freshness()
        context.log.info(f"{view.name}: {summary}")
        return dg.MaterializeResult(
            check_results=[check],
            metadata={
                "rows": summary.rows,
                "entities": summary.entities,
                "first_timestamp": str(summary.first_timestamp),
                "last_timestamp": str(summary.last_timestamp),
                "freshness_hours": round(freshness.total_seconds() / 3600, 2)
                if freshness
                else None,
                "online_rows": summary.materialized_rows,
            },
        )

    return feature_view


def _model_assets(model: ModelSpec, catalog: Catalog) -> list[dg.AssetsDefinition]:
    resolved = catalog.resolved[model.name]
    name = model.name
    profile = load_profiles()[model.compute.profile]
    owners = [model.owner] if "@" in model.owner else []
    automation = gated_automation() if model.retraining.automation else None
    label_source = model.label.source
    scoring_source = model.scoring.source or label_source

    training_set_key = model_key(name, "training_set")

    @dg.asset(
        key=training_set_key,
        deps=[source_key(label_source), *[feature_key(v) for v in resolved.feature_views]],
        check_specs=[
            dg.AssetCheckSpec(
                DATA_GATE,
                asset=training_set_key,
                blocking=True,
                description=DATA_GATE_DESCRIPTION,
            )
        ],
        kinds={"parquet", "feast"},
        group_name=name,
        owners=owners,
        automation_condition=automation,
    )
    def training_set(
        context: AssetExecutionContext, platform: PlatformResource
    ) -> dg.MaterializeResult:
        """Labels joined point-in-time with Feast features, gated, split by time."""
        from ml_platform.datasets import DataGateFailed, build_training_set

        try:
            manifest, report = build_training_set(model, resolved, catalog, platform.settings())
        except DataGateFailed as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        check = gate_check_result(report)
        if not report.success:
            context.log.error(
                f"training set {manifest.snapshot_id} failed its data gate:\n{report.summary()}"
            )
            return dg.MaterializeResult(
                metadata={"data_snapshot_id": manifest.snapshot_id, "gate": "failed"},
                check_results=[check],
                data_version=dg.DataVersion(manifest.snapshot_id),
            )
        context.log.info(f"training set {manifest.snapshot_id}: {manifest.rows}")
        return dg.MaterializeResult(
            check_results=[check],
            metadata={
                "data_snapshot_id": manifest.snapshot_id,
                "rows": sum(manifest.rows.values()),
                **{f"rows_{split}": n for split, n in manifest.rows.items()},
                **{f"label_mean_{split}": v for split, v in manifest.label_balance.items()},
                "excluded_immature_labels": manifest.excluded_immature_labels,
                "time_ranges": dg.MetadataValue.json(manifest.time_ranges),
                "path": manifest.directory,
                "features": ", ".join(manifest.features),
            },
            data_version=dg.DataVersion(manifest.snapshot_id),
        )

    @dg.asset(
        key=model_key(name, "model"),
        deps=[training_set],
        kinds={"pytorch", "mlflow"},
        tags={"ml_platform/compute_profile": model.compute.profile},
        # Step-level Kubernetes settings only reach step pods as op tags (dagster-k8s 0.29).
        op_tags=op_tags(profile, deployment()),
        pool=pool(profile),
        # A preempted or evicted step is retried and resumes from its last checkpoint.
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30),
        group_name=name,
        owners=owners,
        automation_condition=automation,
    )
    def trained_model(context: AssetExecutionContext, platform: PlatformResource) -> Any:
        """A PyTorch model trained on the training set, registered as a new MLflow version."""
        from ml_platform.datasets import DataGateFailed
        from ml_platform.lifecycle import train_model

        try:
            record = train_model(
                model, resolved, platform.settings(), context.run.run_id, context.log.info
            )
        except DataGateFailed as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        return dg.MaterializeResult(
            metadata={
                "model_version": record.version,
                "mlflow_run": dg.MetadataValue.url(record.mlflow_run_url),
                "mlflow_run_id": record.mlflow_run_id,
                "data_snapshot_id": record.snapshot_id,
                "code_version": record.code_version,
                "best_epoch": record.best_epoch,
                "epochs_run": record.epochs_run,
                "resumed_from_epoch": record.resumed_from_epoch,
                "validation_loss": record.validation_loss,
                "samples_per_second": round(record.samples_per_second),
                "device": record.device,
            }
        )

    evaluation_key = model_key(name, "evaluation")

    @dg.asset(
        key=evaluation_key,
        deps=[trained_model],
        check_specs=[
            dg.AssetCheckSpec(
                gate, asset=evaluation_key, blocking=True, description=GATE_DESCRIPTIONS[gate]
            )
            for gate in EVALUATION_GATES
        ],
        kinds={"mlflow"},
        group_name=name,
        owners=owners,
        automation_condition=automation,
    )
    def evaluation(
        context: AssetExecutionContext, platform: PlatformResource
    ) -> dg.MaterializeResult:
        """Test-split metrics, per-slice metrics, and the champion's metrics on the same rows."""
        from ml_platform.lifecycle import evaluate_model

        report = evaluate_model(model, platform.settings(), context.run.run_id, context.log.info)
        metadata: dict[str, Any] = {
            "model_version": report.version,
            "champion_version": report.champion_version,
            "primary_metric": report.primary_metric,
            **{k: v for k, v in report.metrics.items()},
            "slices": dg.MetadataValue.md(_slices_markdown(report.slices)),
        }
        if report.champion_metrics:
            metadata["champion_" + report.primary_metric] = report.champion_metrics.get(
                report.primary_metric
            )
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name=gate.name,
                    passed=gate.passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=gate.description,
                    metadata={
                        "reason": gate.description,
                        "details": dg.MetadataValue.json(_json_safe(gate.metadata)),
                    },
                )
                for gate in report.gate_results()
            ],
        )

    @dg.asset(
        key=model_key(name, "champion"),
        deps=[evaluation],
        kinds={"mlflow"},
        group_name=name,
        owners=owners,
        automation_condition=automation,
    )
    def champion(context: AssetExecutionContext, platform: PlatformResource) -> Any:
        """The MLflow alias 'champion': moved to the evaluated version only if it is better."""
        from ml_platform.lifecycle import promote

        decision, version = promote(
            model, platform.settings(), context.run.run_id, context.log.info
        )
        return dg.MaterializeResult(
            metadata={
                "promoted": decision.promote,
                "champion_version": version,
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            }
        )

    @dg.asset(
        key=model_key(name, "predictions"),
        deps=[
            champion,
            source_key(scoring_source),
            *[feature_key(v) for v in resolved.feature_views],
        ],
        kinds={"parquet"},
        group_name=name,
        owners=owners,
        automation_condition=automation,
    )
    def predictions(context: AssetExecutionContext, platform: PlatformResource) -> Any:
        """The newest data scored by the champion, with an audit record of what scored what."""
        from ml_platform.lifecycle import score

        record = score(
            model, resolved, catalog, platform.settings(), context.run.run_id, context.log.info
        )
        return dg.MaterializeResult(
            metadata={
                "rows": record.rows,
                "model_version": record.model_version,
                "path": record.path,
                "data_snapshot_id": record.data_snapshot_id,
            }
        )

    return [training_set, trained_model, evaluation, champion, predictions]


def _slices_markdown(slices: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = []
    for column, values in slices.items():
        metric_names = sorted({m for metrics in values.values() for m in metrics if m != "rows"})
        lines.append(f"**{column}**\n")
        lines.append("| value | rows | " + " | ".join(metric_names) + " |")
        lines.append("|---" * (len(metric_names) + 2) + "|")
        for value, metrics in values.items():
            cells = [f"{metrics[m]:.4f}" if m in metrics else "-" for m in metric_names]
            lines.append(f"| {value} | {int(metrics.get('rows', 0))} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _invalid_spec_asset(error: SpecError, index: int) -> dg.AssetsDefinition:
    """A visible placeholder for a spec that failed to load, so one bad file hides nothing else."""
    stem = error.path.rsplit("/", 1)[-1].split(".")[0]
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in stem) or "spec"

    @dg.asset(
        key=dg.AssetKey(["invalid_specs", f"{safe}_{index}"]),
        group_name="invalid_specs",
        description=f"INVALID SPEC - fix it to build its assets.\n\n```\n{error}\n```",
        metadata={
            "spec_file": error.path,
            "errors": dg.MetadataValue.md("\n".join(f"- {p}" for p in error.problems)),
        },
    )
    def invalid_spec() -> None:
        raise dg.Failure(description=str(error))

    return invalid_spec


def build_assets(catalog: Catalog) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """Every asset of the catalog, plus placeholders for invalid spec files."""
    built: list[dg.AssetsDefinition | dg.AssetSpec] = []
    for repo in catalog.feature_repos.values():
        if repo.generator is not None:
            built.append(_generator_asset(repo))
        else:
            built += [
                dg.AssetSpec(
                    source_key(s.name),
                    description=s.description or f"External source '{s.name}' ({s.path}).",
                    group_name=SOURCES_GROUP,
                    kinds={"parquet"},
                    metadata={"path": s.path},
                )
                for s in repo.sources
            ]
        automated_views = {
            view
            for name, model in catalog.models.items()
            if model.retraining.automation
            for view in catalog.resolved[name].feature_views
        }
        built += [
            _feature_view_asset(repo, view.name, view.name in automated_views)
            for view in repo.feature_views
        ]
    for model in catalog.models.values():
        built += _model_assets(model, catalog)
    built += [_invalid_spec_asset(error, i) for i, error in enumerate(catalog.errors)]
    return built
