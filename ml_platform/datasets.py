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
from ml_platform.spec import Catalog, ModelSpec, ResolvedFeatures, parse_duration

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")


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
    ]
    columns = [c for c in dict.fromkeys(wanted) if c in source.columns]
    frame = pd.read_parquet(source_path(settings, source.path), columns=columns)
    frame[resolved.timestamp_column] = pd.to_datetime(frame[resolved.timestamp_column], utc=True)
    return frame


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


def build_training_set(
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog, settings: PlatformSettings
) -> TrainingSetManifest:
    """Join labels with features point-in-time, split by time and write a snapshot.

    Rows whose label was not yet known at the data's end (``label.available_at_column`` after
    the newest label timestamp) are excluded: training on them would use labels from the future.
    The pointer to the current training set moves only after all files are written.
    """
    labels = read_label_rows(spec, resolved, catalog, settings)
    timestamp = resolved.timestamp_column
    as_of = labels[timestamp].max()
    excluded = 0
    if spec.label.available_at_column:
        import pandas as pd

        available = pd.to_datetime(labels[spec.label.available_at_column], utc=True)
        mature = available <= as_of
        excluded = int((~mature).sum())
        labels = pd.DataFrame(labels[mature]).drop(columns=[spec.label.available_at_column])
    joined = historical_features(settings, labels, resolved.feature_refs, timestamp)
    if len(joined) != len(labels):
        raise RuntimeError(
            f"the feature join returned {len(joined)} rows for {len(labels)} label rows; "
            "every label row must survive the join (check the Feast offline store)"
        )
    splits = time_split(joined, timestamp, spec.split.validation_fraction, spec.split.test_fraction)
    snapshot = snapshot_id(joined.sort_values([timestamp, *resolved.entity_columns]))
    directory = f"{training_set_root(settings, spec.name)}/{snapshot}"
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
    )
    storage.write_json(f"{directory}/manifest.json", manifest.to_dict())
    storage.write_pointer(training_set_root(settings, spec.name), manifest.to_dict())
    return manifest


def current_training_set(settings: PlatformSettings, model: str) -> TrainingSetManifest:
    """The manifest of the newest complete training set of ``model``."""
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
