"""Training sets: labels joined point-in-time with features, gated, split by time, written.

Each training set lives in ``models/<model>/training_set/<snapshot id>/`` (three parquet splits
and ``manifest.json``); a pointer names the current one, and ``latest_attempt.json`` the newest
attempt, which blocks training while it failed its data gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform.core import storage
from ml_platform.core.progress import Phases
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.split import snapshot_id, time_split
from ml_platform.features.retrieval import historical_features
from ml_platform.features.store import source_path
from ml_platform.gates.state import blocked_feature_views
from ml_platform.spec.catalog import Catalog, ResolvedFeatures
from ml_platform.spec.features import NUMERIC_TYPES, gate_columns
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.gates.report import GateReport

SPLITS = ("train", "validation", "test")


class DataGateFailed(RuntimeError):
    """Data failed a blocking data gate; nothing downstream may use it."""


@dataclass(frozen=True)
class TrainingSetManifest:
    """What a training set holds; stored beside the parquet files and in asset metadata."""

    model: str
    snapshot_id: str
    directory: str
    rows: dict[str, int]
    label_balance: dict[str, float]  # share of positives (binary) or label mean (regression)
    time_ranges: dict[str, list[str]]
    as_of: str
    excluded_immature_labels: int
    features: list[str]
    categorical: list[str]
    label: str
    timestamp_column: str
    created_at: str
    gate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSetManifest:
        """A manifest from what ``to_dict`` wrote."""
        return cls(**data)

    def split_path(self, split: str) -> str:
        """Where the parquet file of ``split`` (train, validation or test) is."""
        return f"{self.directory}/{split}.parquet"


def training_set_root(settings: PlatformSettings, model: str) -> str:
    """The directory holding every training set of ``model``, its pointer and latest attempt.

    Args:
        settings: the platform settings (the data root).
        model: the model name.

    Returns:
        The directory path or URL.
    """
    return settings.data_path("models", model, "training_set")


def read_label_rows(
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog, settings: PlatformSettings
) -> pd.DataFrame:
    """Read the columns of the label source the model needs.

    Columns missing from the file are left out (the data gate then reports them by name);
    timestamp columns are parsed as UTC, unparseable values becoming NaT.

    Args:
        spec: the model.
        resolved: its resolved features.
        catalog: the catalog declaring the label source.
        settings: the platform settings.

    Returns:
        The label rows.
    """
    import pandas as pd

    _, source = catalog.sources()[spec.label.source]
    wanted = [
        *resolved.entity_columns,
        resolved.timestamp_column,
        spec.label.column,
        *([spec.label.available_at_column] if spec.label.available_at_column else []),
        *resolved.request,
        *spec.evaluation.slices,
        *gate_columns(spec.gates.data),
        # Every join key the label rows carry: a champion trained on other feature views can
        # then be evaluated on exactly these rows.
        *(k for r in catalog.feature_repos.values() for e in r.entities for k in e.join_keys),
    ]
    path = source_path(settings, source.path)
    present = set(_parquet_columns(path))
    columns = [c for c in dict.fromkeys(wanted) if c in source.columns and c in present]
    frame = pd.read_parquet(path, columns=columns)
    for column in (resolved.timestamp_column, spec.label.available_at_column):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    return frame


def _parquet_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    return (
        list(pq.read_schema(path).names)
        if not storage.is_url(path)
        else pq.ParquetFile(path).schema_arrow.names
    )


def declared_numeric_inputs(
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog
) -> list[str]:
    """Model inputs whose declared source type is numeric (whatever the data actually holds).

    Args:
        spec: the model.
        resolved: its resolved features.
        catalog: the catalog declaring the sources.

    Returns:
        The numeric, non-categorical model inputs, in model-input order.
    """
    sources = catalog.sources()
    views = catalog.feature_views()
    declared = dict(sources[spec.label.source][1].columns)
    for view in resolved.feature_views:
        declared.update(sources[views[view][1].source][1].columns)
    return [
        c
        for c in resolved.model_inputs
        if c not in resolved.categorical and declared.get(c) in NUMERIC_TYPES
    ]


def training_set_gate(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    frame: pd.DataFrame,
    settings: PlatformSettings,
    numeric: list[str],
) -> GateReport:
    """Run the model's blocking data gate (GE 1.x) on a joined training set.

    ``numeric`` columns must hold finite numbers: +-inf and non-numbers (a column of strings
    where the source declares float64) fail the gate instead of reaching the trainer.

    Args:
        spec: the model; ``gates.data`` is the gate.
        resolved: its resolved features.
        frame: the joined training rows.
        settings: the platform settings (the GE context root).
        numeric: the columns that must hold finite numbers.

    Returns:
        The gate's report.
    """
    from ml_platform.gates.expectations import gate_expectations
    from ml_platform.gates.run import run_gate

    gate = spec.gates.data
    expectations = gate_expectations(
        gate,
        label=spec.label.column,
        task=spec.task,
        key_columns=resolved.entity_columns,
        timestamp_column=resolved.timestamp_column,
        feature_columns=resolved.model_inputs,
        numeric_columns=numeric,
    )
    return run_gate(
        frame,
        expectations,
        name=f"{spec.name}/training_set",
        pii_columns=gate.pii_columns,
        context_root=str(settings.home / "great_expectations"),
    )


def build_training_set(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    catalog: Catalog,
    settings: PlatformSettings,
    log: Callable[[str], None] | None = None,
) -> tuple[TrainingSetManifest, GateReport]:
    """Join labels with features point-in-time, gate the result, split by time, write it.

    Rows whose label was not yet known at the data's end (``label.available_at_column`` after
    the newest label timestamp) are excluded: training on them would use labels from the future.
    The result always goes through the model's blocking data gate. Data that fails it is never
    made current: the attempt is recorded (so training refuses to run until the data changes),
    the previous good training set stays in place.

    Args:
        spec: the model.
        resolved: its resolved features.
        catalog: the catalog declaring its sources and views.
        settings: the platform settings.
        log: receives one line per phase as it ends (read, join, gate, write), with its time
            and rows per second.

    Returns:
        The manifest (of the new current training set, or of the failed attempt) and the gate's
        report.

    Raises:
        DataGateFailed: a feature view the model uses failed its own data gate.
        RuntimeError: the feature join lost label rows.
    """
    blocked = blocked_feature_views(settings, list(resolved.feature_views))
    if blocked:
        raise DataGateFailed(
            f"feature view(s) {', '.join(blocked)} failed their data gate; '{spec.name}' builds "
            "no training set on them until they are materialized again on passing data"
        )
    phases = Phases(f"training set of {spec.name}", log)
    labels = read_label_rows(spec, resolved, catalog, settings)
    labels, as_of, excluded = _mature_labels(spec, labels, resolved.timestamp_column)
    phases.done(f"read the labels ({excluded:,} not yet known left out)", len(labels))
    joined = _join_features(settings, labels, resolved)
    views = len(resolved.feature_views)
    phases.done(f"joined {views} feature view(s) point-in-time", len(joined))
    report = training_set_gate(
        spec, resolved, joined, settings, declared_numeric_inputs(spec, resolved, catalog)
    )
    phases.done(f"data gate {'passed' if report.success else 'FAILED'}", len(joined))
    timestamp = resolved.timestamp_column
    sort_keys = [c for c in [timestamp, *resolved.entity_columns] if c in joined.columns]
    snapshot = snapshot_id(joined, sort_by=sort_keys)
    root = training_set_root(settings, spec.name)
    directory = f"{root}/{snapshot}"
    gate_record = report.to_metadata()
    attempt = {"snapshot_id": snapshot, "gate_passed": report.success, "gate": gate_record}
    if not report.success:
        storage.write_json(f"{root}/latest_attempt.json", attempt)
        return _failed_manifest(spec, snapshot, directory, len(joined), gate_record), report
    # PII the gate needed is not kept in the training set unless the model uses it.
    used = {*resolved.model_inputs, *spec.evaluation.slices}
    unused_pii = [c for c in spec.gates.data.pii_columns if c not in used]
    if unused_pii:
        joined = joined.drop(columns=unused_pii)
    splits = time_split(joined, timestamp, spec.split.validation_fraction, spec.split.test_fraction)
    for name, part in splits.items():
        storage.write_parquet(part, f"{directory}/{name}.parquet")
    sizes = ", ".join(f"{name} {len(part):,}" for name, part in splits.items())
    phases.done(f"wrote the splits ({sizes})", len(joined))
    manifest = _manifest(spec, resolved, splits, snapshot, directory, as_of, excluded, gate_record)
    storage.write_json(f"{directory}/manifest.json", manifest.to_dict())
    storage.write_pointer(root, manifest.to_dict())
    storage.write_json(f"{root}/latest_attempt.json", attempt)
    return manifest, report


def _mature_labels(
    spec: ModelSpec, labels: pd.DataFrame, timestamp: str
) -> tuple[pd.DataFrame, Any, int]:
    """Drop rows whose label was not known at the newest label timestamp (``as_of``).

    Returns the mature rows (without the availability column), ``as_of`` (None without rows)
    and how many rows were dropped.
    """
    import pandas as pd

    as_of = labels[timestamp].max() if timestamp in labels and len(labels) else None
    excluded = 0
    if spec.label.available_at_column in labels.columns and as_of is not None:
        mature = labels[spec.label.available_at_column] <= as_of
        excluded = int((~mature).sum())
        labels = pd.DataFrame(labels[mature]).drop(columns=[spec.label.available_at_column])
    return labels, as_of, excluded


def _join_features(
    settings: PlatformSettings, labels: pd.DataFrame, resolved: ResolvedFeatures
) -> pd.DataFrame:
    """Join features onto the label rows; rows lacking keys or timestamps are left to the gate."""
    timestamp = resolved.timestamp_column
    joinable = (
        len(labels) > 0
        and all(c in labels.columns for c in [*resolved.entity_columns, timestamp])
        and bool(labels[[*resolved.entity_columns, timestamp]].notna().to_numpy().all())
    )
    joined = (
        historical_features(settings, labels, resolved.feature_refs, timestamp)
        if joinable
        else labels
    )
    if len(joined) != len(labels):
        raise RuntimeError(
            f"the feature join returned {len(joined)} rows for {len(labels)} label rows; "
            "every label row must survive the join (check the Feast offline store)"
        )
    return joined


def _manifest(
    spec: ModelSpec,
    resolved: ResolvedFeatures,
    splits: dict[str, pd.DataFrame],
    snapshot: str,
    directory: str,
    as_of: Any,
    excluded: int,
    gate: dict[str, Any],
) -> TrainingSetManifest:
    label = spec.label.column
    timestamp = resolved.timestamp_column
    return TrainingSetManifest(
        model=spec.name,
        snapshot_id=snapshot,
        directory=directory,
        rows={name: len(part) for name, part in splits.items()},
        label_balance={
            name: float(part[label].mean()) if len(part) else float("nan")
            for name, part in splits.items()
        }
        if spec.task != "multiclass_classification"
        else {},
        time_ranges={
            name: [str(part[timestamp].min()), str(part[timestamp].max())]
            for name, part in splits.items()
        },
        as_of=str(as_of),
        excluded_immature_labels=excluded,
        features=resolved.model_inputs,
        categorical=resolved.categorical,
        label=label,
        timestamp_column=timestamp,
        created_at=datetime.now(UTC).isoformat(),
        gate=gate,
    )


def _failed_manifest(
    spec: ModelSpec, snapshot: str, directory: str, rows: int, gate: dict[str, Any]
) -> TrainingSetManifest:
    return TrainingSetManifest(
        model=spec.name,
        snapshot_id=snapshot,
        directory=directory,
        rows={"all": rows},
        label_balance={},
        time_ranges={},
        as_of="",
        excluded_immature_labels=0,
        features=[],
        categorical=[],
        label=spec.label.column,
        timestamp_column="",
        created_at=datetime.now(UTC).isoformat(),
        gate=gate,
    )


def current_training_set(settings: PlatformSettings, model: str) -> TrainingSetManifest:
    """The manifest of the newest training set of ``model`` that passed its data gate.

    Args:
        settings: the platform settings.
        model: the model name.

    Returns:
        The current training set's manifest.

    Raises:
        DataGateFailed: the newest attempt failed its gate: nothing may train on older data
            either until the data changes and a new training set passes.
        FileNotFoundError: no training set was built yet.
    """
    attempt_path = f"{training_set_root(settings, model)}/latest_attempt.json"
    if storage.exists(attempt_path):
        attempt = storage.read_json(attempt_path)
        if not attempt["gate_passed"]:
            raise DataGateFailed(
                f"the newest training set of '{model}' ({attempt['snapshot_id']}) failed its "
                f"data gate, so '{model}' is not trained:\n{attempt['gate'].get('summary', '')}"
            )
    record = storage.read_pointer(training_set_root(settings, model))
    if record is None:
        raise FileNotFoundError(
            f"model '{model}' has no training set yet; materialize '{model}/training_set' first"
        )
    return TrainingSetManifest.from_dict(record)


def read_split(manifest: TrainingSetManifest, split: str) -> pd.DataFrame:
    """Read one split (train, validation or test) of a training set.

    Args:
        manifest: the training set.
        split: ``train``, ``validation`` or ``test``.

    Returns:
        The split's rows.
    """
    return storage.read_parquet(manifest.split_path(split))
