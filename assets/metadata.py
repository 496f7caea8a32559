"""What the catalog shows: asset metadata and check results rendered from the library's records.

Each function takes one record the library returned (a gate report, a training set manifest, a
model record...) and returns the numbers a person wants to see next to the asset. Nothing here
computes anything: it only picks and formats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.keys import DATA_GATE, NO_SIGNIFICANT_DRIFT
from ml_platform.core.helpers import json_safe, redact_url

if TYPE_CHECKING:
    from ml_platform.datasets.training_set import TrainingSetManifest
    from ml_platform.evaluation.promotion import PromotionDecision
    from ml_platform.evaluation.report import EvaluationReport
    from ml_platform.features.materialize import ViewSummary
    from ml_platform.gates.report import GateReport
    from ml_platform.lifecycle.records import DriftReportRecord, ModelRecord, PredictionRecord
    from ml_platform.spec.errors import SpecError

MAX_FAILURES_SHOWN = 20

Metadata = dict[str, Any]


def gate_check_result(report: GateReport) -> dg.AssetCheckResult:
    """A data gate's report as the blocking ``data_quality`` check result.

    Args:
        report: the gate's report on the asset's data.

    Returns:
        The check result, with a table of the first failing expectations.
    """
    failed = report.failed()
    table = ["| expectation | observed | unexpected | sample |", "|---|---|---|---|"]
    for outcome in failed[:MAX_FAILURES_SHOWN]:
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
            **({"data_docs": _link(report.data_docs_path)} if report.data_docs_path else {}),
        },
    )


def evaluation_check_results(report: EvaluationReport) -> list[dg.AssetCheckResult]:
    """Every evaluation gate's verdict as a blocking check result of ``<model>/evaluation``.

    Args:
        report: the evaluation report, with its gate results.

    Returns:
        One check result per gate, its numbers (JSON-safe: NaN becomes ``"nan"``) under
        ``details``.
    """
    return [
        dg.AssetCheckResult(
            check_name=gate.name,
            passed=gate.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=gate.description,
            metadata={
                "reason": gate.description,
                "details": dg.MetadataValue.json(json_safe(gate.metadata)),
            },
        )
        for gate in report.gate_results()
    ]


def slices_markdown(slices: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per-slice metrics as one markdown table per slice column.

    Args:
        slices: column -> slice value -> metric name (and ``rows``) -> value.

    Returns:
        The tables; a metric a slice lacks shows as ``-``.
    """
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


def generated_source_metadata(rows: int, path: str, params: dict[str, Any]) -> Metadata:
    """A generated source: its row count, file and the generator's parameters."""
    return {"rows": rows, "path": redact_url(path), "params": dg.MetadataValue.json(dict(params))}


def failed_feature_view_metadata() -> Metadata:
    """A feature view whose data failed its gate: neither applied nor materialized."""
    return {"gate": "failed: not applied or materialized"}


def feature_view_metadata(summary: ViewSummary) -> Metadata:
    """A materialized feature view: rows, entities, time range, freshness, online rows."""
    freshness = summary.freshness()
    return {
        "rows": summary.rows,
        "entities": summary.entities,
        "first_timestamp": str(summary.first_timestamp),
        "last_timestamp": str(summary.last_timestamp),
        "freshness_hours": round(freshness.total_seconds() / 3600, 2) if freshness else None,
        "online_rows": summary.materialized_rows,
    }


def failed_training_set_metadata(manifest: TrainingSetManifest) -> Metadata:
    """A training set that failed its data gate: only its snapshot id."""
    return {"data_snapshot_id": manifest.snapshot_id, "gate": "failed"}


def training_set_metadata(manifest: TrainingSetManifest) -> Metadata:
    """A training set: snapshot id, rows and label mean per split, time ranges, features."""
    return {
        "data_snapshot_id": manifest.snapshot_id,
        "rows": sum(manifest.rows.values()),
        **{f"rows_{split}": n for split, n in manifest.rows.items()},
        **{f"label_mean_{split}": v for split, v in manifest.label_balance.items()},
        "excluded_immature_labels": manifest.excluded_immature_labels,
        "time_ranges": dg.MetadataValue.json(manifest.time_ranges),
        "path": redact_url(manifest.directory),
        "features": ", ".join(manifest.features),
    }


def model_metadata(record: ModelRecord) -> Metadata:
    """A trained model: registered version, MLflow run, data snapshot, training figures."""
    return {
        "model_version": record.version,
        "mlflow_run": dg.MetadataValue.url(redact_url(record.mlflow_run_url)),
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


def evaluation_metadata(report: EvaluationReport) -> Metadata:
    """An evaluation: versions compared, every test metric, slice tables, champion's primary."""
    metadata: Metadata = {
        "model_version": report.version,
        "champion_version": report.champion_version,
        "primary_metric": report.primary_metric,
        **report.metrics,
        "slices": dg.MetadataValue.md(slices_markdown(report.slices)),
    }
    if report.threshold is not None:
        metadata["threshold"] = report.threshold
    if report.plots:
        metadata["plots"] = dg.MetadataValue.md(plots_markdown(report.plots))
    if report.champion_metrics:
        metadata["champion_" + report.primary_metric] = report.champion_metrics.get(
            report.primary_metric
        )
    return metadata


def plots_markdown(plots: dict[str, str]) -> str:
    """The evaluation's PNG files as Markdown images the Dagster UI shows inline.

    Args:
        plots: Plot name to PNG path, as the evaluation report lists them.

    Returns:
        One data-URI image per plot that can still be read; a line naming any that cannot.
    """
    from ml_platform.core import storage
    from ml_platform.evaluation.plots import Plot, as_markdown

    shown, missing = [], []
    for name, path in plots.items():
        try:
            png = storage.read_bytes(path)
        except OSError:
            missing.append(name)
            continue
        shown.append(Plot(name=name, title=name.replace("_", " "), png=png))
    text = as_markdown(shown)
    if missing:
        text += f"\n\n(not found: {', '.join(missing)})"
    return text


def champion_metadata(decision: PromotionDecision, champion_version: str | None) -> Metadata:
    """A promotion decision: whether the alias moved, the champion now, and why."""
    return {
        "promoted": decision.promote,
        "champion_version": champion_version,
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
    }


def predictions_metadata(record: PredictionRecord) -> Metadata:
    """A scoring run: rows scored, by which version, where, on which data snapshot."""
    return {
        "rows": record.rows,
        "model_version": record.model_version,
        "path": redact_url(record.path),
        "data_snapshot_id": record.data_snapshot_id,
    }


def _number(value: float | None) -> float | None:
    """A float the UI can plot, or None for a value that is absent or not finite."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _link(location: str) -> dg.MetadataValue:
    """A file location as the UI links it: a URL (without credentials) for object stores and
    web, else a path."""
    shown = redact_url(location)
    return dg.MetadataValue.url(shown) if "://" in shown else dg.MetadataValue.path(shown)


def drift_columns_markdown(record: DriftReportRecord) -> str:
    """Every judged column (inputs, then the prediction) as a markdown table."""
    lines = ["| column | test | score | threshold | verdict |", "|---|---|---|---|---|"]
    for verdict in record.column_verdicts:
        score, threshold = verdict.get("score"), verdict.get("threshold")
        outcome = verdict["status"] if verdict["status"] != "ok" else "no drift"
        if verdict.get("reason") and verdict["status"] != "drift":
            outcome = f"{outcome}: {verdict['reason']}"
        lines.append(
            f"| {verdict['column']} | {verdict.get('test') or '-'} | "
            f"{'-' if score is None else f'{score:.4g}'} | "
            f"{'-' if threshold is None else f'{threshold:g}'} | {outcome} |"
        )
    return "\n".join(lines)


def drift_report_metadata(record: DriftReportRecord) -> Metadata:
    """A drift report: the numbers the UI plots over time, the verdicts, the Evidently report.

    Per input column ``drift_score/<column>`` (the test's distance or p-value), ``drift_share``,
    ``prediction_drift_score`` and ``performance_current/_reference/_drop`` are floats, so the
    catalog plots each of them across materializations; absent values are left out.
    """
    metadata: Metadata = {
        "status": record.status,
        "model_version": record.model_version,
        "report_id": record.report_id,
        "rows": record.rows,
        "drift_share": float(record.drift_share),
        "drift_share_threshold": float(record.drift_share_threshold),
        "drifted_features": ", ".join(record.drifted_features) or "none",
        "prediction_drift": record.prediction_drift,
        "retrain_reasons": ", ".join(record.retrain_reasons) or "none",
        "data_snapshot_id": record.data_snapshot_id,
        "predictions": redact_url(record.predictions_path),
        "columns": dg.MetadataValue.md(drift_columns_markdown(record)),
    }
    scores = {f"drift_score/{c}": _number(s) for c, s in record.feature_scores.items()}
    scores["prediction_drift_score"] = _number(record.prediction_drift_score)
    performance = record.performance
    if performance is not None:
        metadata["performance_metric"] = performance.metric
        metadata["performance_status"] = performance.status
        metadata["performance_rows"] = performance.rows
        scores["performance_current"] = _number(performance.current)
        scores["performance_reference"] = _number(performance.reference)
        scores["performance_drop"] = _number(performance.drop)
    metadata.update({key: value for key, value in scores.items() if value is not None})
    if record.reason:
        metadata["reason"] = record.reason
    if record.html_path:
        metadata["html_report"] = _link(record.html_path)
    if record.report_path:
        metadata["report_json"] = _link(record.report_path)
    return metadata


def drift_check_result(record: DriftReportRecord) -> dg.AssetCheckResult:
    """A drift report as the ``no_significant_drift`` check (WARN: drift never blocks scoring).

    A window too small for a verdict passes, its description saying so.
    """
    if record.status == "insufficient_data":
        description = f"insufficient data: {record.reason or 'too few rows for a verdict'}"
    elif record.drifted:
        description = f"drift: {record.reason or ', '.join(record.drifted_features)}"
    else:
        description = (
            f"no significant drift: {len(record.drifted_features)} drifted input(s), "
            f"drift share {record.drift_share:.0%} < {record.drift_share_threshold:.0%}"
        )
    return dg.AssetCheckResult(
        check_name=NO_SIGNIFICANT_DRIFT,
        passed=not record.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=description[:1000],
        metadata={
            "status": record.status,
            "drift_share": float(record.drift_share),
            "drifted_features": ", ".join(record.drifted_features) or "none",
            "prediction_drift": record.prediction_drift,
            "report_id": record.report_id,
        },
    )


def invalid_spec_metadata(error: SpecError) -> Metadata:
    """A spec file that failed to load: its path and each problem as a markdown list."""
    return {
        "spec_file": redact_url(error.path),
        "errors": dg.MetadataValue.md("\n".join(f"- {p}" for p in error.problems)),
    }
