"""Scored windows: which scored rows a drift report judges, read from predictions or calls.

With ``monitoring.source: predictions`` (the default), a window is the newest predictions file by
default, one given file, or every row scored within a time range (a row scored several times
keeps its newest score). Predictions keep the model inputs next to each score
(``lifecycle.score``), so a window holds everything a drift verdict compares with the champion's
training reference. With ``monitoring.source: calls``, a window is the prediction service's
successful calls in a time range (default: the last ``monitoring.window``, else
``scoring.window``), read from the audit trail in the same shape (``serving.calls.calls_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform.core import storage
from ml_platform.core.helpers import redact_url
from ml_platform.datasets.split import snapshot_id
from ml_platform.lifecycle.records import StepContext
from ml_platform.lifecycle.reference import VersionReference
from ml_platform.spec.catalog import ResolvedFeatures
from ml_platform.spec.model import ModelSpec
from ml_platform.spec.values import parse_duration

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ScoredWindow:
    """Which scored rows a drift report judges; all None means the newest predictions.

    Attributes:
        start: The first row timestamp included (UTC when naive).
        end: The first row timestamp excluded (UTC when naive).
        predictions_path: One predictions parquet file to judge (all its rows, then filtered
            by ``start``/``end`` when given).
    """

    start: datetime | None = None
    end: datetime | None = None
    predictions_path: str | None = None

    @property
    def is_newest(self) -> bool:
        """Whether this is the default window: the newest predictions."""
        return self.start is None and self.end is None and self.predictions_path is None

    def describe(self) -> str:
        """The window in words, for logs and metadata."""
        if self.is_newest:
            return "newest predictions"
        parts = [f"file {redact_url(self.predictions_path)}"] if self.predictions_path else []
        if self.start or self.end:
            parts.append(f"rows from {self.start or 'the start'} to {self.end or 'the end'}")
        return ", ".join(parts)


def read_window(
    spec: ModelSpec, resolved: ResolvedFeatures, step: StepContext, window: ScoredWindow
) -> tuple[pd.DataFrame, str]:
    """The scored rows to judge, and the file (or directory) they come from.

    Raises:
        FileNotFoundError: The model was never scored, or the given file does not exist.
    """
    import pandas as pd

    if spec.monitoring.source == "calls":
        return read_calls_window(spec, resolved, step, window)
    directory = step.settings.data_path("models", spec.name, "predictions")
    timestamp = resolved.timestamp_column
    if window.predictions_path:
        if not storage.exists(window.predictions_path):
            raise FileNotFoundError(f"no predictions file at {window.predictions_path}")
        frame, source = storage.read_parquet(window.predictions_path), window.predictions_path
    elif window.start or window.end:
        frame, source = all_predictions(directory, resolved), directory
    else:
        record = storage.read_pointer(directory)
        if record is None:
            raise FileNotFoundError(
                f"model '{spec.name}' has no predictions to monitor; materialize "
                f"'{spec.name}/predictions'"
            )
        frame, source = storage.read_parquet(record["path"]), record["path"]
    if timestamp in frame.columns and len(frame):
        times = pd.to_datetime(frame[timestamp], utc=True)
        keep = pd.Series(True, index=frame.index)
        if window.start:
            keep &= times >= utc(window.start)
        if window.end:
            keep &= times < utc(window.end)
        if window.is_newest and spec.monitoring.window:
            keep &= times > times.max() - parse_duration(spec.monitoring.window)
        frame = frame[keep]
    return pd.DataFrame(frame).reset_index(drop=True), source


def read_calls_window(
    spec: ModelSpec, resolved: ResolvedFeatures, step: StepContext, window: ScoredWindow
) -> tuple[pd.DataFrame, str]:
    """The service's successful calls in the window, shaped like predictions, and their source.

    Without a time range the window is the last ``monitoring.window`` (else ``scoring.window``)
    up to now.

    Raises:
        ValueError: A predictions file was given although the model monitors its calls.
    """
    from ml_platform.serving.calls import calls_frame

    if window.predictions_path:
        raise ValueError(
            f"model '{spec.name}' monitors its online calls (monitoring.source: calls): a "
            "predictions file cannot be judged; give a time range (start, end) or none"
        )
    start, end = window.start, window.end
    if window.is_newest:
        start = datetime.now(UTC) - parse_duration(spec.monitoring.window or spec.scoring.window)
    frame = calls_frame(
        step.settings.audit_url,
        spec.name,
        start,
        end,
        timestamp_column=resolved.timestamp_column,
    )
    source = (
        f"calls of {spec.name} from {start.isoformat() if start else 'the first'} to "
        f"{end.isoformat() if end else 'now'} in {redact_url(step.settings.audit_url)}"
    )
    return frame, source


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive one is taken to be UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC)


def all_predictions(directory: str, resolved: ResolvedFeatures) -> pd.DataFrame:
    """Every scored row under ``directory``; a row scored several times keeps its newest score."""
    import fsspec
    import pandas as pd

    filesystem, root = fsspec.core.url_to_fs(directory)
    paths = sorted(filesystem.glob(f"{root.rstrip('/')}/*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no predictions under {directory}")
    protocol = directory.split("://", 1)[0] + "://" if storage.is_url(directory) else ""
    frame = pd.concat([storage.read_parquet(protocol + p) for p in paths], ignore_index=True)
    keys = [c for c in [*resolved.entity_columns, resolved.timestamp_column] if c in frame]
    if keys and "scored_at" in frame.columns:
        frame = frame.sort_values("scored_at", kind="stable").drop_duplicates(keys, keep="last")
    return frame


def scored_by(frame: pd.DataFrame, version: str) -> pd.DataFrame:
    """The rows of a predictions frame that ``version`` scored (none without a version column)."""
    import pandas as pd

    if "model_version" not in frame.columns:
        return frame.iloc[:0]
    return pd.DataFrame(frame[frame["model_version"].astype(str) == version])


def score_columns(frame: pd.DataFrame) -> list[str]:
    """The prediction columns of a predictions frame: ``score``, or ``score_<i>`` per class."""
    if "score" in frame.columns:
        return ["score"]
    classes = [c for c in frame.columns if c.startswith("score_") and c[6:].isdigit()]
    return sorted(classes, key=lambda c: int(c[6:]))


def prediction_values(frame: pd.DataFrame) -> Any:
    """The model's output on the rows, as it predicted it: one column, or (rows, classes)."""
    columns = score_columns(frame)
    if columns == ["score"]:
        return frame["score"].to_numpy()
    return frame[columns].to_numpy()


def window_snapshot(
    frame: pd.DataFrame, resolved: ResolvedFeatures, reference: VersionReference
) -> str:
    """The content hash of the window's rows: keys, timestamp and inputs, in a stable order.

    Scoring times and scores are left out, so the same rows scored again by the same version
    are the same drift event.
    """
    columns = [
        c
        for c in dict.fromkeys(
            [*resolved.entity_columns, resolved.timestamp_column, *reference.statistics.columns]
        )
        if c in frame.columns
    ]
    rows = frame.loc[:, columns]
    sort_keys = [c for c in [resolved.timestamp_column, *resolved.entity_columns] if c in columns]
    if sort_keys:
        rows = rows.sort_values(by=sort_keys, kind="stable")
    return snapshot_id(rows)
