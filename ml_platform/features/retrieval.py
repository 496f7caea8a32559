"""Point-in-time retrieval of features from Feast's offline store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_platform.core.settings import PlatformSettings
from ml_platform.features.store import feature_store, quiet_feast

if TYPE_CHECKING:
    import pandas as pd

EVENT_TIMESTAMP = "event_timestamp"


def historical_features(
    settings: PlatformSettings,
    entity_rows: pd.DataFrame,
    feature_refs: list[str],
    timestamp_column: str,
) -> pd.DataFrame:
    """Point-in-time correct join of ``entity_rows`` with Feast features.

    For each row, every feature takes the newest value with a timestamp at or before the row's
    timestamp and within the view's TTL; otherwise it is null. Every input row is returned, in the
    input order (Feast sorts its output; the row order is restored with a row id).

    Args:
        settings: the platform settings (the Feast store).
        entity_rows: rows holding the join keys and ``timestamp_column``.
        feature_refs: Feast references, ``view:feature``; none returns the rows as they are.
        timestamp_column: the rows' timestamp column, kept under its name.

    Returns:
        The rows with one column per feature (named after the feature).
    """
    import pandas as pd
    from pandas.api.types import is_datetime64_dtype

    frame = entity_rows.reset_index(drop=True)
    if not feature_refs:
        return frame
    row_id = "__ml_platform_row_id"
    entity_df = frame.rename(columns={timestamp_column: EVENT_TIMESTAMP}).assign(
        **{row_id: range(len(frame))}
    )
    entity_df[EVENT_TIMESTAMP] = pd.to_datetime(entity_df[EVENT_TIMESTAMP], utc=True)
    input_types = entity_df.dtypes.to_dict()  # before Feast, which may convert columns in place
    store = feature_store(settings)
    with quiet_feast():
        job = store.get_historical_features(entity_df=entity_df, features=feature_refs)
        joined = job.to_df()
    # The platform's ASOF store keeps the input order; other stores sort their own way. Sorting
    # or re-indexing copies the whole frame (twice the training set's memory at 10M rows).
    if not joined[row_id].is_monotonic_increasing:
        joined = joined.sort_values(row_id)
    if not joined.index.equals(pd.RangeIndex(len(joined))):
        joined = joined.reset_index(drop=True)
    joined = joined.drop(columns=[row_id])
    # Feast's Spark store returns the rows' timestamps naive, in nanoseconds (Spark's session zone
    # must be UTC, docs/scale.md); the DuckDB stores return them in UTC, in microseconds (both
    # engines' resolution). Either way the same rows get the same types, so the same snapshot id.
    for column, dtype in input_types.items():
        if isinstance(dtype, pd.DatetimeTZDtype) and is_datetime64_dtype(joined[column].dtype):
            utc = joined[column].dt.tz_localize("UTC")
            joined[column] = utc.dt.tz_convert(dtype.tz).dt.as_unit("us")
    # Feast returns feature columns named after the feature (full_feature_names=False).
    return joined.rename(columns={EVENT_TIMESTAMP: timestamp_column})
