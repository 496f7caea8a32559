"""What the catalog shows: asset metadata and check results rendered from the library's records.

Each function takes one record the library returned (a gate report, a training set manifest, a
model record...) and returns the numbers a person wants to see next to the asset. Nothing here
computes anything: it only picks and formats. Readable by construction: floats are rounded to
four significant digits (MLflow keeps full precision), absent values are left out rather than
shown as ``null``, and anything with rows and columns (slices, gate outcomes, splits) is a
``dg.MetadataValue.table`` with its ``dg.TableSchema``. Data assets carry ``dagster/row_count``
and ``dagster/column_schema``, read from the parquet footer by :func:`read_column_schema`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.keys import DATA_GATE, FRESH_WITHIN_TTL, NO_SIGNIFICANT_DRIFT
from ml_platform.core.helpers import redact_url

if TYPE_CHECKING:
    from ml_platform.datasets.training_set import TrainingSetManifest
    from ml_platform.evaluation.gates import GateResult
    from ml_platform.evaluation.promotion import PromotionDecision
    from ml_platform.evaluation.report import EvaluationReport
    from ml_platform.features.materialize import ViewSummary
    from ml_platform.gates.report import GateReport
    from ml_platform.lifecycle.records import DriftReportRecord, ModelRecord, PredictionRecord
    from ml_platform.spec.errors import SpecError

MAX_FAILURES_SHOWN = 20
SIGNIFICANT_DIGITS = 4
ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"

Metadata = dict[str, Any]


def rounded(value: float) -> float:
    """``value`` to four significant digits (``0.83996`` -> ``0.84``, ``11375.2`` -> ``11380``)."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def readable(metadata: Mapping[str, Any]) -> Metadata:
    """Metadata as the UI should show it: absent and non-finite values left out, floats rounded.

    Args:
        metadata: Entry name to value (plain values or ``dg.MetadataValue``).

    Returns:
        The entries without ``None``, NaN or infinite values, each float rounded by
        :func:`rounded`; metadata values and other types unchanged.
    """
    shown: Metadata = {}
    for name, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, float) and not isinstance(value, bool):
            if not math.isfinite(value):
                continue
            value = rounded(value)
        shown[name] = value
    return shown


def owners(owner: str) -> list[str]:
    """A spec's ``owner`` as Dagster asset owners: an email, or a team (``team:<name>``).

    Args:
        owner: The spec's owner: ``someone@example.com``, ``team:fraud`` or a team name.

    Returns:
        One owner, or none for an empty value.
    """
    owner = owner.strip()
    if not owner:
        return []
    if "@" in owner or owner.startswith("team:"):
        return [owner]
    return [f"team:{owner}"]


def spec_owners(*specs: object) -> list[str]:
    """The asset owners the first spec that names an ``owner`` gives (feature specs may not)."""
    for spec in specs:
        owner = getattr(spec, "owner", "")
        if isinstance(owner, str) and owner:
            return owners(owner)
    return []


def read_column_schema(path: str, columns: Iterable[str] | None = None) -> dg.TableSchema | None:
    """The column names and Arrow types of a parquet file, read from its footer only.

    Args:
        path: A local path or an fsspec URL.
        columns: Only these columns, in this order (those the file lacks are skipped).

    Returns:
        The schema, or None when the file cannot be read (its metadata then omits it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml_platform.core import storage

    try:
        if storage.is_url(path):
            import fsspec

            with fsspec.open(path, "rb") as handle:
                schema = pq.read_schema(handle)  # type: ignore[arg-type]
        else:
            schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException):
        return None
    types = {field.name: str(field.type) for field in schema}
    names = list(types) if columns is None else [c for c in columns if c in types]
    return dg.TableSchema(columns=[dg.TableColumn(name, types[name]) for name in names])


def declared_column_schema(
    columns: Mapping[str, str], descriptions: Mapping[str, str] | None = None
) -> dg.TableSchema:
    """The columns a source spec declares (name to type), as a table schema.

    Args:
        columns: Column name to declared type (``int64``, ``timestamp``...).
        descriptions: Optional column descriptions (e.g. ``feature``, ``timestamp``).

    Returns:
        The schema, in declaration order.
    """
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, kind, description=descriptions.get(name))
            for name, kind in columns.items()
        ]
    )


def _data_metadata(rows: int | None, columns: dg.TableSchema | None) -> Metadata:
    """The standard row count and column schema entries of a data asset."""
    metadata: Metadata = {}
    if rows is not None:
        metadata[ROW_COUNT] = int(rows)
    if columns is not None:
        metadata[COLUMN_SCHEMA] = dg.MetadataValue.table_schema(columns)
    return metadata


def _table(columns: list[tuple[str, str]], rows: Iterable[Mapping[str, Any]]) -> dg.MetadataValue:
    """A table with its schema; floats rounded, absent and non-finite cells left empty."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns])
    records = []
    for row in rows:
        shown = readable(row)
        # Every record must hold every column: an absent value is an empty cell, not "null".
        records.append(dg.TableRecord({name: shown.get(name, "") for name, _ in columns}))
    return dg.MetadataValue.table(records, schema=schema)


def _ui_link(url: str) -> dg.MetadataValue:
    """A link into a web UI, without credentials but with its ``#/...`` route (MLflow's)."""
    base, hashmark, route = url.partition("#")
    return dg.MetadataValue.url(redact_url(base) + hashmark + route)


def gate_check_result(report: GateReport) -> dg.AssetCheckResult:
    """A data gate's report as the blocking ``data_quality`` check result.

    Args:
        report: the gate's report on the asset's data.

    Returns:
        The check result: counts (failed expectations measured against a bound of 0) and a
        table of every expectation's outcome, failures first.
    """
    failed = report.failed()
    ordered = failed[:MAX_FAILURES_SHOWN] + [o for o in report.outcomes if o.success]
    outcomes = [
        {
            "expectation": outcome.describe(),
            "passed": outcome.success,
            "observed": str(outcome.observed_value)[:80]
            if outcome.observed_value is not None
            else None,
            "unexpected": outcome.unexpected_count,
            "sample": ", ".join(map(str, outcome.sample[:5]))[:80] or None,
        }
        for outcome in ordered
    ]
    return dg.AssetCheckResult(
        check_name=DATA_GATE,
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.summary()[:1000],
        metadata=readable(
            {
                "rows": report.rows,
                "expectations": len(report.outcomes),
                "failed_expectations": len(failed),
                "measured": float(len(failed)),
                "bound": 0.0,
                "engine": report.engine,
                "seconds": report.seconds,
                "outcomes": _table(
                    [
                        ("expectation", "string"),
                        ("passed", "bool"),
                        ("observed", "string"),
                        ("unexpected", "int"),
                        ("sample", "string"),
                    ],
                    outcomes,
                ),
                "data_docs": _link(report.data_docs_path) if report.data_docs_path else None,
            }
        ),
    )


GATE_CHECK_COLUMNS = [
    ("check", "string"),
    ("measured", "float"),
    ("bound", "float"),
    ("side", "string"),
    ("passed", "bool"),
]


def gate_check_metadata(gate: GateResult) -> Metadata:
    """The numbers behind an evaluation gate's verdict, as check metadata.

    ``measured`` and ``bound`` are the comparison closest to failing (the failed one if any),
    so the catalog plots them across evaluations; ``checked`` names it; ``checks`` is a table
    of every comparison (per metric, per slice). A gate that compared nothing (no champion yet)
    has only its reason.

    Args:
        gate: the evaluation gate's result.

    Returns:
        The metadata.
    """
    metadata: Metadata = {"reason": gate.description}
    binding = gate.binding_check()
    if binding is not None:
        metadata["checked"] = binding.check
        metadata["measured"] = binding.measured
        metadata["bound"] = binding.bound
        metadata["checks"] = _table(
            GATE_CHECK_COLUMNS, [check.to_dict() for check in gate.gate_checks()]
        )
    return readable(metadata)


def evaluation_check_results(report: EvaluationReport) -> list[dg.AssetCheckResult]:
    """Every evaluation gate's verdict as a blocking check result of ``<model>/evaluation``.

    Args:
        report: the evaluation report, with its gate results.

    Returns:
        One check result per gate, with its measured number, bound and comparisons
        (:func:`gate_check_metadata`).
    """
    return [
        dg.AssetCheckResult(
            check_name=gate.name,
            passed=gate.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=gate.description,
            metadata=gate_check_metadata(gate),
        )
        for gate in report.gate_results()
    ]


def slices_table(slices: dict[str, dict[str, dict[str, float]]]) -> dg.MetadataValue:
    """Per-slice metrics as one table: slice column, value, rows, then each metric.

    Args:
        slices: column -> slice value -> metric name (and ``rows``) -> value.

    Returns:
        The table; a metric a slice lacks (too few rows) is left empty.
    """
    metric_names = sorted(
        {m for values in slices.values() for metrics in values.values() for m in metrics} - {"rows"}
    )
    rows = [
        {
            "slice": column,
            "value": str(value),
            "rows": int(metrics.get("rows", 0)),
            **{m: metrics[m] for m in metric_names if m in metrics},
        }
        for column, values in slices.items()
        for value, metrics in values.items()
    ]
    columns = [("slice", "string"), ("value", "string"), ("rows", "int")]
    return _table(columns + [(m, "float") for m in metric_names], rows)


def gates_table(report: EvaluationReport) -> dg.MetadataValue:
    """Every evaluation gate's outcome: passed, the number closest to its bound, and why."""
    rows = []
    for gate in report.gate_results():
        binding = gate.binding_check()
        rows.append(
            {
                "gate": gate.name,
                "passed": gate.passed,
                "checked": binding.check if binding else None,
                "measured": binding.measured if binding else None,
                "bound": binding.bound if binding else None,
                "reason": gate.description[:200],
            }
        )
    columns = [
        ("gate", "string"),
        ("passed", "bool"),
        ("checked", "string"),
        ("measured", "float"),
        ("bound", "float"),
        ("reason", "string"),
    ]
    return _table(columns, rows)


def generated_source_metadata(
    rows: int, path: str, params: dict[str, Any], columns: dg.TableSchema | None = None
) -> Metadata:
    """A generated source: its row count, column schema, file and the generator's parameters."""
    return {
        **_data_metadata(rows, columns),
        "rows": rows,
        "path": redact_url(path),
        "params": dg.MetadataValue.json(dict(params)),
    }


def failed_feature_view_metadata() -> Metadata:
    """A feature view whose data failed its gate: neither applied nor materialized."""
    return {"gate": "failed: not applied or materialized"}


def feature_view_metadata(summary: ViewSummary, columns: dg.TableSchema | None = None) -> Metadata:
    """A materialized feature view: rows, columns, entities, time range, freshness, online rows."""
    freshness = summary.freshness()
    return readable(
        {
            **_data_metadata(summary.rows, columns),
            "rows": summary.rows,
            "entities": summary.entities,
            "first_timestamp": _timestamp(summary.first_timestamp),
            "last_timestamp": _timestamp(summary.last_timestamp),
            "freshness_hours": freshness.total_seconds() / 3600 if freshness else None,
            "online_rows": summary.materialized_rows,
        }
    )


def _timestamp(value: datetime | None) -> str | None:
    return None if value is None else str(value)


def freshness_check_result(
    newest: datetime | None, ttl: str, ttl_hours: float, now: datetime, source: str
) -> dg.AssetCheckResult:
    """A feature view's ``fresh_within_ttl`` check (WARN): its source's newest event vs its TTL.

    Args:
        newest: The newest event timestamp in the view's source (UTC); None when the source has
            no rows or cannot be read.
        ttl: The view's TTL as the spec writes it (``7d``).
        ttl_hours: The TTL in hours.
        now: The time the staleness is measured at (UTC).
        source: The source's name.

    Returns:
        A passing result when the newest event is younger than the TTL; else a WARN failure
        saying how many hours stale it is. ``measured`` is the staleness in hours, ``bound``
        the TTL in hours.
    """
    if newest is None:
        return dg.AssetCheckResult(
            check_name=FRESH_WITHIN_TTL,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"source '{source}' has no rows or cannot be read: no event to date",
            metadata={"source": source, "ttl": ttl, "bound": rounded(ttl_hours)},
        )
    hours = (now - newest).total_seconds() / 3600
    passed = hours <= ttl_hours
    verdict = "within" if passed else "older than"
    return dg.AssetCheckResult(
        check_name=FRESH_WITHIN_TTL,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"newest event in source '{source}' ({newest.isoformat(timespec='seconds')}) is "
            f"{hours:,.0f} hours old: {verdict} the view's TTL of {ttl} ({ttl_hours:,.0f} hours)"
        ),
        metadata=readable(
            {
                "measured": hours,
                "bound": ttl_hours,
                "staleness_hours": hours,
                "ttl_hours": ttl_hours,
                "ttl": ttl,
                "newest_event": newest.isoformat(timespec="seconds"),
                "source": source,
            }
        ),
    )


def failed_training_set_metadata(manifest: TrainingSetManifest) -> Metadata:
    """A training set that failed its data gate: only its snapshot id."""
    return {"data_snapshot_id": manifest.snapshot_id, "gate": "failed"}


def training_set_metadata(
    manifest: TrainingSetManifest, columns: dg.TableSchema | None = None
) -> Metadata:
    """A training set: snapshot id, rows, columns; per split its rows, label mean, time range."""
    splits = [
        {
            "split": split,
            "rows": rows,
            "label_mean": manifest.label_balance.get(split),
            "first": (manifest.time_ranges.get(split) or [None, None])[0],
            "last": (manifest.time_ranges.get(split) or [None, None])[-1],
        }
        for split, rows in manifest.rows.items()
    ]
    return readable(
        {
            **_data_metadata(sum(manifest.rows.values()), columns),
            "data_snapshot_id": manifest.snapshot_id,
            "rows": sum(manifest.rows.values()),
            **{f"rows_{split}": n for split, n in manifest.rows.items()},
            **{f"label_mean_{split}": v for split, v in manifest.label_balance.items()},
            "excluded_immature_labels": manifest.excluded_immature_labels,
            "splits": _table(
                [
                    ("split", "string"),
                    ("rows", "int"),
                    ("label_mean", "float"),
                    ("first", "string"),
                    ("last", "string"),
                ],
                splits,
            ),
            "path": redact_url(manifest.directory),
            "features": ", ".join(manifest.features),
        }
    )


def model_metadata(
    record: ModelRecord, version_url: str | None = None, description: str = ""
) -> Metadata:
    """A trained model: version and links to MLflow, data snapshot, training figures, plots.

    Args:
        record: The model step's record.
        version_url: A link to the registered version in the MLflow UI.
        description: The spec's description of the model.

    Returns:
        The metadata; the record's ``plots`` (learning curve...) inline, and its
        ``evaluation`` status (``pending`` until the version is evaluated).
    """
    return readable(
        {
            "model_version": record.version,
            "mlflow_run": _ui_link(record.mlflow_run_url),
            "mlflow_model_version": _ui_link(version_url) if version_url else None,
            "mlflow_run_id": record.mlflow_run_id,
            "evaluation": record.evaluation,
            "description": description or None,
            "data_snapshot_id": record.snapshot_id,
            "code_version": record.code_version,
            "flavor": record.flavor,
            "best_epoch": record.best_epoch,
            "epochs_run": record.epochs_run,
            "resumed_from_epoch": record.resumed_from_epoch,
            "validation_loss": record.validation_loss,
            "samples_per_second": round(record.samples_per_second),
            "device": record.device,
            "plots": dg.MetadataValue.md(plots_markdown(record.plots)) if record.plots else None,
        }
    )


def evaluation_metadata(
    report: EvaluationReport, links: Mapping[str, str] | None = None
) -> Metadata:
    """An evaluation: versions compared, every test metric, slice and gate tables, plots.

    Args:
        report: The evaluation report.
        links: Entry name to URL (the MLflow run and registered version evaluated).

    Returns:
        The metadata; metrics rounded, the champion's primary metric when it was compared.
    """
    metadata: Metadata = {
        "model_version": report.version,
        **{name: _ui_link(url) for name, url in (links or {}).items()},
        "champion_version": report.champion_version,
        "primary_metric": report.primary_metric,
        **report.metrics,
        "threshold": report.threshold,
        "gates": gates_table(report),
    }
    if report.slices:
        metadata["slices"] = slices_table(report.slices)
    if report.plots:
        metadata["plots"] = dg.MetadataValue.md(plots_markdown(report.plots))
    if report.champion_metrics:
        metadata["champion_" + report.primary_metric] = report.champion_metrics.get(
            report.primary_metric
        )
    return readable(metadata)


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
    return readable(
        {
            "promoted": decision.promote,
            "champion_version": champion_version,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        }
    )


def predictions_metadata(
    record: PredictionRecord, columns: dg.TableSchema | None = None
) -> Metadata:
    """A scoring run: rows and columns scored, by which version, where, on which snapshot."""
    return {
        **_data_metadata(record.rows, columns),
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
    if record.plots:
        metadata["plots"] = dg.MetadataValue.md(plots_markdown(record.plots))
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
