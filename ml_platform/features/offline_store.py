"""A Feast offline store that runs point-in-time joins as DuckDB ASOF joins.

Select it in ``feature_store.yaml`` (or a ``RepoConfig``) with::

    offline_store:
      type: ml_platform.features.offline_store.AsofDuckDBOfflineStore
      memory_limit: 8GB   # optional, DuckDB's own limit; threads: 4 also optional

It is Feast's DuckDB offline store (materialization, ``pull_all_from_table_or_query``, writes,
logging and monitoring are inherited unchanged) with one method replaced:
``get_historical_features``. Feast's store joins every entity row with every earlier source row of
the same keys, then keeps the newest per row with a window over the whole product; here each
feature view's source is first reduced to one row per (join keys, event timestamp), and then one
``ASOF LEFT JOIN`` per view picks, for each entity row, the newest source row at or before the
row's timestamp. The result is the same as Feast's:

- a feature is the value of the newest source row of the same join keys whose event timestamp is
  at or before the entity row's timestamp; it is null when that row is older than the view's TTL
  (``source timestamp + ttl < entity timestamp``); a TTL of zero or none is unbounded;
- rows with equal event timestamps are ordered by ``created_timestamp_column``, newest first,
  nulls last; rows equal in both (full ties) are ambiguous in Feast, whose choice depends on
  DuckDB's sort; here the first of them in the source (file name, then row number) wins, always;
- source rows with a null join key or event timestamp never match; entity rows with a null key or
  timestamp, or without any earlier feature row, are kept with null features;
- every entity row is returned once, duplicates included, with all of its columns; the feature
  columns follow, view by view, in the order of the feature references;
- field mappings, join-key mappings of projections, feature services, aliases and
  ``full_feature_names`` (``view__feature``) follow Feast's naming;
- column types are those Feast's store returns (entity columns converted as ibis converts them,
  feature columns as ibis maps DuckDB's types).

Unlike Feast's store, rows come back in the entity dataframe's order.

What it does not compile is handed to Feast's own join, unchanged: sources other than local
parquet files (URLs, Delta, Iceberg, Lance, MLflow, credentials), ``filter_by_created_timestamp``
on a view with a created timestamp, and on-demand views in substrait mode. An entity dataframe
given as SQL is refused with an error, as Feast's DuckDB store cannot take one either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from feast.data_format import ParquetFormat
from feast.errors import FeastEntityDFMissingColumnsError
from feast.feature_view import FeatureView
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _write_data_source,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import _get_entity_df_event_timestamp_range
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.on_demand_feature_view import OnDemandFeatureView
from pydantic import StrictInt, StrictStr

from ml_platform.core.settings import ASOF_OFFLINE_STORE

if TYPE_CHECKING:
    from feast.infra.registry.base_registry import BaseRegistry
    from feast.repo_config import RepoConfig
    from feast.saved_dataset import SavedDatasetStorage, ValidationReference

logger = logging.getLogger(__name__)

STORE_TYPE = ASOF_OFFLINE_STORE
ROW_ID = "__asof_row_id"
SOURCE_FILE = "__asof_source_file"
ENTITY_TABLE = "__asof_entities"
GLOB = re.compile(r"[*?\[]")


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Options of the ASOF offline store: Feast's DuckDB options plus DuckDB's resource limits."""

    type: StrictStr = STORE_TYPE
    memory_limit: StrictStr | None = None
    """DuckDB's ``memory_limit`` for the join (for example ``8GB``); DuckDB's default if unset."""
    threads: StrictInt | None = None
    """DuckDB's ``threads`` for the join; all cores if unset."""


@dataclass(frozen=True)
class ViewJoin:
    """One feature view's part of the join, in the names of its source after field mapping.

    Attributes:
        view: the feature view's name (or alias), for messages.
        path: the parquet file, directory glob or list of files, as DuckDB reads it.
        field_mapping: the source's ``field_mapping`` (source column -> feature name).
        timestamp_field: the event timestamp column.
        created_timestamp_column: the created timestamp column, or None.
        join_keys: pairs of (source column, entity dataframe column).
        features: pairs of (feature column, output column name).
        ttl: the view's TTL; None when unbounded.
    """

    view: str
    path: str
    field_mapping: dict[str, str]
    timestamp_field: str
    created_timestamp_column: str | None
    join_keys: tuple[tuple[str, str], ...]
    features: tuple[tuple[str, str], ...]
    ttl: timedelta | None


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store with ``get_historical_features`` compiled to ASOF joins."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        """Point-in-time join of ``entity_df`` with the features (see the module docstring).

        Args:
            config: the repo config; ``config.offline_store`` holds the DuckDB limits.
            feature_views: the views the references name (Feast resolves feature services).
            feature_refs: ``view:feature`` references.
            entity_df: entity rows: join keys, an event timestamp column (``event_timestamp``,
                or the only datetime column) and any other columns, kept as they are.
            registry: the registry (for on-demand views).
            project: the Feast project.
            full_feature_names: name the feature columns ``view__feature``.
            filter_by_created_timestamp: only use source rows created at or before the entity
                row's timestamp (handed to Feast's own join).
            **kwargs: other retrieval options (``start_date``/``end_date`` are refused, as by
                Feast's DuckDB store).

        Returns:
            A job whose ``to_df``/``to_arrow`` run the join.

        Raises:
            ValueError: ``entity_df`` is missing, or is SQL, or range options were given.
            FeastEntityDFMissingColumnsError: ``entity_df`` lacks a join key of a view.
        """
        if entity_df is None or kwargs.get("start_date") or kwargs.get("end_date"):
            raise ValueError(
                "offline store 'AsofDuckDBOfflineStore': get_historical_features needs an "
                "entity_df; retrieval by start_date/end_date without entity rows is not "
                "supported (nor by Feast's DuckDB store)"
            )
        if isinstance(entity_df, str):
            raise ValueError(
                "offline store 'AsofDuckDBOfflineStore': entity_df must be a pandas DataFrame; "
                "an entity_df given as SQL is not supported (nor by Feast's DuckDB store). "
                "Run the query first, e.g. duckdb.sql(query).df(), and pass the DataFrame"
            )
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        reason = _unsupported_reason(feature_views, odfvs, filter_by_created_timestamp)
        if reason is not None:
            logger.info("ASOF offline store: Feast's own join is used, %s", reason)
            return DuckDBOfflineStore.get_historical_features(
                config=config,
                feature_views=feature_views,
                feature_refs=feature_refs,
                entity_df=entity_df,
                registry=registry,
                project=project,
                full_feature_names=full_feature_names,
                filter_by_created_timestamp=filter_by_created_timestamp,
            )
        timestamp_column = infer_event_timestamp_from_entity_df(dict(entity_df.dtypes.items()))
        entity_df = _event_timestamps_in_utc(entity_df, timestamp_column)
        joins = [_view_join(view, feature_refs, full_feature_names) for view in feature_views]
        required = {column for join in joins for _, column in join.join_keys}
        missing = required - set(entity_df.columns)
        if missing:
            raise FeastEntityDFMissingColumnsError(sorted(required), sorted(missing))
        outputs = [output for join in joins for _, output in join.features]
        clashes = sorted(set(outputs) & set(entity_df.columns))
        if clashes:
            raise ValueError(
                f"offline store 'AsofDuckDBOfflineStore': feature columns {clashes} have the "
                "names of entity_df columns; rename those columns or use full_feature_names=True"
            )
        earliest, latest = _get_entity_df_event_timestamp_range(entity_df, timestamp_column)
        store_config = config.offline_store
        return AsofRetrievalJob(
            entity_df=entity_df,
            timestamp_column=timestamp_column,
            joins=joins,
            on_demand_feature_views=odfvs,
            full_feature_names=full_feature_names,
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=list(set(entity_df.columns) - {timestamp_column}),
                min_event_timestamp=earliest,
                max_event_timestamp=latest,
            ),
            duckdb_config=_duckdb_config(store_config),
            repo_path=str(config.repo_path),
        )


class AsofRetrievalJob(RetrievalJob):
    """The compiled join of one ``get_historical_features`` call; it runs on each read."""

    def __init__(
        self,
        entity_df: pd.DataFrame,
        timestamp_column: str,
        joins: list[ViewJoin],
        on_demand_feature_views: list[OnDemandFeatureView],
        full_feature_names: bool,
        metadata: RetrievalMetadata,
        duckdb_config: dict[str, Any],
        repo_path: str,
    ) -> None:
        super().__init__()
        self._entity_df = entity_df
        self._timestamp_column = timestamp_column
        self._joins = joins
        self._on_demand_feature_views = on_demand_feature_views
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self._duckdb_config = duckdb_config
        self._repo_path = repo_path

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._on_demand_feature_views

    @property
    def metadata(self) -> RetrievalMetadata:
        return self._metadata

    def to_sql(self) -> str:
        """The DuckDB query of the features (entity rows in table ``__asof_entities``)."""
        with self._connect() as connection:
            return join_sql(connection, self._joins, self._timestamp_column)

    def to_df(
        self, validation_reference: ValidationReference | None = None, timeout: int | None = None
    ) -> pd.DataFrame:
        """The joined rows as pandas, in the entity order (on-demand views and validation run).

        Feast's ``to_df`` adds ``reset_index`` to the conversion, a copy of the whole result; the
        conversion here already has a fresh index, and frees each Arrow column once converted.
        """
        table = self.to_arrow(validation_reference=validation_reference, timeout=timeout)
        return table.to_pandas(split_blocks=True, self_destruct=True)

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        import ibis
        from ibis.backends.duckdb.converter import DuckDBPyArrowData
        from ibis.backends.sql.datatypes import DuckDBType

        del timeout  # a local query: nothing to time out
        # The entity columns are converted as Feast's store converts them (ibis.memtable):
        # the returned columns then have Feast's types, and only the keys enter DuckDB.
        entity_schema = ibis.memtable(self._entity_df).schema()
        entities = pa.Table.from_pandas(
            self._entity_df, schema=entity_schema.to_pyarrow(), preserve_index=False
        ).replace_schema_metadata(None)
        outputs = [output for join in self._joins for _, output in join.features]
        if not outputs:
            return entities
        keys = sorted({column for join in self._joins for _, column in join.join_keys})
        key_table = entities.select([*keys, self._timestamp_column]).append_column(
            ROW_ID, pa.array(np.arange(entities.num_rows, dtype=np.int64))
        )
        with self._connect() as connection:
            connection.register(ENTITY_TABLE, key_table)
            relation = connection.sql(join_sql(connection, self._joins, self._timestamp_column))
            feature_types = [DuckDBType.from_string(str(t)) for t in relation.types[1:]]
            features = relation.to_arrow_table()
        # The join returns the rows in its own order with their row ids, a permutation of
        # 0..n-1: one gather puts them back in the entity order (cheaper than ORDER BY).
        row_ids = features.column(0).to_numpy()
        if len(row_ids) != entities.num_rows:  # an ASOF LEFT JOIN keeps each row exactly once
            raise RuntimeError(
                f"ASOF offline store: the join returned {len(row_ids)} rows for "
                f"{entities.num_rows} entity rows"
            )
        positions = np.empty_like(row_ids)
        positions[row_ids] = np.arange(len(row_ids), dtype=row_ids.dtype)
        features = features.drop_columns([features.column_names[0]]).take(positions)
        table = pa.Table.from_arrays(
            [*entities.columns, *features.columns], names=[*entities.column_names, *outputs]
        )
        schema = ibis.schema([*entity_schema.items(), *zip(outputs, feature_types, strict=True)])
        return DuckDBPyArrowData.convert_table(table, schema)

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        import ibis

        _write_data_source(
            ibis.memtable(self._to_arrow_internal(timeout)),
            storage.to_data_source(),
            self._repo_path,
            "overwrite",
            allow_overwrite,
        )

    def _connect(self) -> duckdb.DuckDBPyConnection:
        connection = duckdb.connect(config=self._duckdb_config)
        # As in Feast's store (ibis sets it): naive timestamps are read as UTC.
        connection.execute("SET TimeZone = 'UTC'")
        return connection


def join_sql(
    connection: duckdb.DuckDBPyConnection, joins: Sequence[ViewJoin], timestamp_column: str
) -> str:
    """The DuckDB query of the feature columns, one row per entity row, with its row id.

    Each view's source is reduced to its newest row per (join keys, event timestamp) (created
    timestamp descending, nulls last; then the first row in the source), and joined with
    ``ASOF LEFT JOIN`` on the keys and ``entity timestamp >= source timestamp``; a TTL nulls the
    features of a row older than ``entity timestamp - ttl``.

    Args:
        connection: a DuckDB connection, to read the sources' column names.
        joins: the views' joins, in output order.
        timestamp_column: the entity rows' event timestamp column.

    Returns:
        The query; it reads the entity rows from ``__asof_entities`` (join keys, timestamp and
        ``__asof_row_id``) and returns their ``__asof_row_id`` and one column per feature,
        aliased ``__f<i>``, in no particular order.
    """
    entity_ts = f"e.{quote(timestamp_column)}"
    sources: list[str] = []
    clauses: list[str] = []
    selected: list[str] = []
    for index, join in enumerate(j for j in joins if j.features):
        alias = f"v{index}"
        sources.append(f"{alias} AS ({_deduplicated_source(connection, join)})")
        conditions = [
            f"e.{quote(entity_key)} = {alias}.__k{position}"
            for position, (_, entity_key) in enumerate(join.join_keys)
        ]
        conditions.append(f"{entity_ts} >= {alias}.__ts")
        clauses.append(f"ASOF LEFT JOIN {alias} ON {' AND '.join(conditions)}")
        for position in range(len(join.features)):
            value = f"{alias}.__f{position}"
            if join.ttl is not None:
                ttl_us = join.ttl // timedelta(microseconds=1)
                value = (
                    f"CASE WHEN {alias}.__ts + to_microseconds({ttl_us}::BIGINT) >= {entity_ts} "
                    f"THEN {value} END"
                )
            selected.append(f"{value} AS __f{len(selected)}")
    return (
        f"WITH {', '.join(sources)}\n"
        f"SELECT e.{ROW_ID}, {', '.join(selected)}\n"
        f"FROM {ENTITY_TABLE} AS e\n" + "\n".join(clauses)
    )


def _deduplicated_source(connection: duckdb.DuckDBPyConnection, join: ViewJoin) -> str:
    """One view's source: its newest row per (join keys, event timestamp), in view names."""
    options = ", file_row_number = true"
    if GLOB.search(join.path):
        options += f", filename = {literal(SOURCE_FILE)}"
    scan = f"read_parquet({literal(join.path)}{options})"
    columns = [row[0] for row in connection.sql(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
    origin = _mapped_columns(columns, join.field_mapping)

    def column(name: str) -> str:
        if name not in origin:
            raise ValueError(
                f"feature view '{join.view}': column '{name}' is not in its source "
                f"{join.path!r} (columns after field mapping: {sorted(origin)})"
            )
        return quote(origin[name])

    def utc(name: str) -> str:
        return f"CAST({column(name)} AS TIMESTAMPTZ)"

    keys = [column(source_key) for source_key, _ in join.join_keys]
    projection = [f"{key} AS __k{i}" for i, key in enumerate(keys)]
    projection.append(f"{utc(join.timestamp_field)} AS __ts")
    projection += [f"{column(feature)} AS __f{i}" for i, (feature, _) in enumerate(join.features)]
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in [*keys, column(join.timestamp_field)])
    order = []
    if join.created_timestamp_column:
        order.append(f"{utc(join.created_timestamp_column)} DESC NULLS LAST")
    if GLOB.search(join.path):
        order.append(f"{quote(SOURCE_FILE)} ASC")
    order.append("file_row_number ASC")
    return (
        f"SELECT {', '.join(projection)} FROM {scan} WHERE {not_null} "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join([*keys, utc(join.timestamp_field)])} "
        f"ORDER BY {', '.join(order)}) = 1"
    )


def _mapped_columns(columns: list[str], field_mapping: dict[str, str]) -> dict[str, str]:
    """Source column per column name after Feast's field mapping (renames of present columns)."""
    current = list(columns)
    for old, new in field_mapping.items():
        if old in current:
            current[current.index(old)] = new
    return dict(zip(current, columns, strict=True))


def _view_join(view: FeatureView, feature_refs: list[str], full_feature_names: bool) -> ViewJoin:
    """What the join needs from one view, named as Feast's store names it."""
    source = view.batch_source
    assert isinstance(source, FileSource)  # checked by _unsupported_reason
    prefix = f"{view.projection.name_to_use()}:"
    features = [ref.split(":")[1] for ref in feature_refs if ref.startswith(prefix)]
    base_name = view.projection.name_alias or view.name
    join_key_map = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
    from ibis.util import normalize_filename

    return ViewJoin(
        view=base_name,
        path=normalize_filename(source.path),
        field_mapping=dict(source.field_mapping),
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        join_keys=tuple(join_key_map.items()),
        features=tuple(
            (feature, f"{base_name}__{feature}" if full_feature_names else feature)
            for feature in features
        ),
        ttl=view.ttl or None,
    )


def _unsupported_reason(
    feature_views: list[FeatureView],
    on_demand_feature_views: list[OnDemandFeatureView],
    filter_by_created_timestamp: bool,
) -> str | None:
    """Why this call must go to Feast's own join, or None when it compiles to ASOF joins."""
    for view in feature_views:
        source = view.batch_source
        if type(source) is not FileSource:
            return f"feature view '{view.name}' reads a {type(source).__name__}"
        if not (
            isinstance(source.file_format, ParquetFormat)
            or (source.file_format is None and source.path.endswith(".parquet"))
        ):
            return f"feature view '{view.name}' reads a source that is not parquet"
        if re.match(r"^[a-z0-9+.-]+://", source.path) and not source.path.startswith("file://"):
            return f"feature view '{view.name}' reads a remote path"
        if source.resolve_credentials() or source.s3_endpoint_override:
            return f"feature view '{view.name}' reads with credentials"
        if filter_by_created_timestamp and source.created_timestamp_column:
            return "filter_by_created_timestamp is set"
    if any(odfv.mode == "substrait" for odfv in on_demand_feature_views):
        return "an on-demand feature view is in substrait mode"
    return None


def _event_timestamps_in_utc(entity_df: pd.DataFrame, timestamp_column: str) -> pd.DataFrame:
    """The entity rows with string timestamps parsed as UTC, as Feast does (without mutating)."""
    timestamps = entity_df[timestamp_column].infer_objects()
    if pd.api.types.is_string_dtype(timestamps) or pd.api.types.is_object_dtype(timestamps):
        return entity_df.assign(**{timestamp_column: pd.to_datetime(timestamps, utc=True)})
    return entity_df


def _duckdb_config(store_config: Any) -> dict[str, Any]:
    """DuckDB connection options from the store's config (none for Feast's own config)."""
    options: dict[str, Any] = {}
    if getattr(store_config, "memory_limit", None):
        options["memory_limit"] = store_config.memory_limit
    if getattr(store_config, "threads", None):
        options["threads"] = store_config.threads
    return options


def quote(name: str) -> str:
    """A DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"
