"""Training and scoring sets: label rows joined point-in-time with Feast features.

A training set is written as three parquet files (train/validation/test, split by time) plus a
manifest, in a directory named after its data snapshot id: a content hash of the joined rows, so
the same data always gets the same id and a model version can name exactly what it learned from.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform import storage
from ml_platform.features import historical_features, source_path
from ml_platform.settings import PlatformSettings
from ml_platform.spec import Catalog, ModelSpec, ResolvedFeatures, gate_columns, parse_duration

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.validation import GateReport

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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSetManifest:
        return cls(**data)

    def split_path(self, split: str) -> str:
        return f"{self.directory}/{split}.parquet"


def training_set_root(settings: PlatformSettings, model: str) -> str:
    return settings.data_path("models", model, "training_set")


def snapshot_id(frame: pd.DataFrame) -> str:
    """A content hash of a DataFrame: same columns, dtypes and values give the same id."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    hashes = pd.util.hash_pandas_object(frame, index=False)  # pyright: ignore[reportAttributeAccessIssue]
    digest.update(hashes.to_numpy().tobytes())
    return digest.hexdigest()[:16]


def read_label_rows(
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog, settings: PlatformSettings
) -> pd.DataFrame:
    """Read the columns of the label source the model needs."""
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
    # Only columns the file has: a missing column must fail the data gate with its name, not
    # crash the reader.
    present = set(_parquet_columns(path))
    columns = [c for c in dict.fromkeys(wanted) if c in source.columns and c in present]
    frame = pd.read_parquet(path, columns=columns)
    for column in (resolved.timestamp_column, spec.label.available_at_column):
        if column in frame.columns:
            # Unparseable timestamps become NaT, which the data gate reports.
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    return frame


def _parquet_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    return (
        list(pq.read_schema(path).names)
        if not storage.is_url(path)
        else pq.ParquetFile(path).schema_arrow.names
    )


def time_split(
    frame: pd.DataFrame, timestamp_column: str, validation_fraction: float, test_fraction: float
) -> dict[str, pd.DataFrame]:
    """Split by time: the oldest rows train, the next validate, the newest test.

    Cut points are timestamps, so rows sharing a timestamp never straddle two splits.
    """
    import pandas as pd

    ordered = frame.sort_values(timestamp_column, kind="stable").reset_index(drop=True)
    times = ordered[timestamp_column]
    train_end = times.quantile(1 - validation_fraction - test_fraction)
    validation_end = times.quantile(1 - test_fraction)
    splits = {
        "train": ordered[times < train_end],
        "validation": ordered[(times >= train_end) & (times < validation_end)],
        "test": ordered[times >= validation_end],
    }
    for name, part in splits.items():
        if part.empty:
            raise ValueError(
                f"the {name} split is empty ({len(frame)} labelled rows between "
                f"{times.min()} and {times.max()}); add data or change split fractions"
            )
    return {name: pd.DataFrame(part).reset_index(drop=True) for name, part in splits.items()}


NUMERIC_TYPES = frozenset({"int64", "int32", "float64", "float32"})


def declared_numeric_inputs(
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog
) -> list[str]:
    """Model inputs whose declared source type is numeric (whatever the data actually holds)."""
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
    """
    from ml_platform.validation import gate_expectations, run_gate

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
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog, settings: PlatformSettings
) -> tuple[TrainingSetManifest, GateReport]:
    """Join labels with features point-in-time, gate the result, split by time, write it.

    Rows whose label was not yet known at the data's end (``label.available_at_column`` after
    the newest label timestamp) are excluded: training on them would use labels from the future.
    The result always goes through the model's blocking data gate. Data that fails it is never
    made current: the attempt is recorded (so training refuses to run until the data changes),
    the previous good training set stays in place.
    """
    import pandas as pd

    blocked = blocked_feature_views(settings, list(resolved.feature_views))
    if blocked:
        raise DataGateFailed(
            f"feature view(s) {', '.join(blocked)} failed their data gate; '{spec.name}' builds "
            "no training set on them until they are materialized again on passing data"
        )
    labels = read_label_rows(spec, resolved, catalog, settings)
    timestamp = resolved.timestamp_column
    as_of = labels[timestamp].max() if timestamp in labels and len(labels) else None
    excluded = 0
    if spec.label.available_at_column in labels.columns and as_of is not None:
        available = labels[spec.label.available_at_column]
        mature = available <= as_of
        excluded = int((~mature).sum())
        labels = pd.DataFrame(labels[mature]).drop(columns=[spec.label.available_at_column])
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
    report = training_set_gate(
        spec, resolved, joined, settings, declared_numeric_inputs(spec, resolved, catalog)
    )
    sort_keys = [c for c in [timestamp, *resolved.entity_columns] if c in joined.columns]
    snapshot = snapshot_id(joined.sort_values(sort_keys) if sort_keys else joined)
    directory = f"{training_set_root(settings, spec.name)}/{snapshot}"
    gate_record = report.to_metadata()
    attempt = {"snapshot_id": snapshot, "gate_passed": report.success, "gate": gate_record}
    if not report.success:
        storage.write_json(f"{training_set_root(settings, spec.name)}/latest_attempt.json", attempt)
        return _failed_manifest(spec, snapshot, directory, len(joined), gate_record), report
    # PII the gate needed is not kept in the training set unless the model uses it.
    used = {*resolved.model_inputs, *spec.evaluation.slices}
    joined = joined.drop(columns=[c for c in spec.gates.data.pii_columns if c not in used])
    splits = time_split(joined, timestamp, spec.split.validation_fraction, spec.split.test_fraction)
    for name, part in splits.items():
        storage.write_parquet(part, f"{directory}/{name}.parquet")
    label = spec.label.column
    manifest = TrainingSetManifest(
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
        gate=gate_record,
    )
    storage.write_json(f"{directory}/manifest.json", manifest.to_dict())
    storage.write_pointer(training_set_root(settings, spec.name), manifest.to_dict())
    storage.write_json(f"{training_set_root(settings, spec.name)}/latest_attempt.json", attempt)
    return manifest, report


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


def view_gate_root(settings: PlatformSettings, view: str) -> str:
    return settings.data_path("features", view)


def record_view_gate(settings: PlatformSettings, view: str, passed: bool) -> None:
    """Remember a feature view's latest gate verdict."""
    storage.write_json(f"{view_gate_root(settings, view)}/gate.json", {"passed": passed})


def blocked_feature_views(settings: PlatformSettings, views: list[str]) -> list[str]:
    """Views whose latest data gate failed (cleared by materializing them on passing data)."""
    blocked = []
    for view in views:
        path = f"{view_gate_root(settings, view)}/gate.json"
        if storage.exists(path) and not storage.read_json(path)["passed"]:
            blocked.append(view)
    return blocked


def current_training_set(settings: PlatformSettings, model: str) -> TrainingSetManifest:
    """The manifest of the newest training set of ``model`` that passed its data gate.

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
    return storage.read_parquet(manifest.split_path(split))


def build_scoring_set(
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog, settings: PlatformSettings
) -> pd.DataFrame:
    """The newest rows of the scoring source (within ``scoring.window``) joined with features."""
    import pandas as pd

    source_name = spec.scoring.source or spec.label.source
    _, source = catalog.sources()[source_name]
    timestamp = source.timestamp_field
    keep = [
        c
        for c in dict.fromkeys(
            [*resolved.entity_columns, timestamp, *resolved.request, *spec.evaluation.slices]
        )
        if c in source.columns
    ]
    # Any id-like columns of the source are carried so predictions can be joined back.
    identifiers = [c for c in source.columns if c.endswith("_id") and c not in keep]
    frame = pd.read_parquet(source_path(settings, source.path), columns=[*identifiers, *keep])
    frame[timestamp] = pd.to_datetime(frame[timestamp], utc=True)
    newest = frame[timestamp].max()
    recent = pd.DataFrame(frame[frame[timestamp] > newest - parse_duration(spec.scoring.window)])
    joined = historical_features(settings, recent, resolved.feature_refs, timestamp)
    return joined.rename(columns={timestamp: resolved.timestamp_column})
