"""Scoring sets: the newest rows of the scoring source, joined point-in-time with features."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_platform.core.settings import PlatformSettings
from ml_platform.features.retrieval import historical_features
from ml_platform.features.store import source_path
from ml_platform.spec.catalog import Catalog, ResolvedFeatures
from ml_platform.spec.model import ModelSpec
from ml_platform.spec.values import parse_duration

if TYPE_CHECKING:
    import pandas as pd


def build_scoring_set(
    spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog, settings: PlatformSettings
) -> pd.DataFrame:
    """The newest rows of the scoring source (within ``scoring.window``) joined with features.

    Args:
        spec: the model; ``scoring.source`` (default: the label source) and ``scoring.window``.
        resolved: the model's resolved features.
        catalog: the catalog declaring the source.
        settings: the platform settings.

    Returns:
        The rows to score, with every id-like (``*_id``) column of the source kept so predictions
        can be joined back, the timestamp under the model's timestamp column.
    """
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
    identifiers = [c for c in source.columns if c.endswith("_id") and c not in keep]
    frame = pd.read_parquet(source_path(settings, source.path), columns=[*identifiers, *keep])
    frame[timestamp] = pd.to_datetime(frame[timestamp], utc=True)
    newest = frame[timestamp].max()
    recent = pd.DataFrame(frame[frame[timestamp] > newest - parse_duration(spec.scoring.window)])
    joined = historical_features(settings, recent, resolved.feature_refs, timestamp)
    return joined.rename(columns={timestamp: resolved.timestamp_column})
