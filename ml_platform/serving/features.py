"""A call's Feast features: the online store, read with the refs the training set used.

``OnlineFeatures`` reads ``ResolvedFeatures.feature_refs`` (the same ``view:feature`` references
the point-in-time training set joined) from the Feast online store for a list of entities, so
what the service feeds the model is what training saw, by definition. Join keys that no view
keyed by them has a row for are unknown (the service answers 404 naming the keys and the views);
a view without a row for keys another view knows gives nulls, as the point-in-time join does. Each
view's definition is fingerprinted (sha256 of its Feast spec without timestamps): the call trail
records which definition served a call. The Feast store is rebuilt on each ``refresh`` (the
Feast registry is cached inside a store), and swapped in only once it is read.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml_platform.core.settings import PlatformSettings
from ml_platform.features.store import feature_store, quiet_feast

if TYPE_CHECKING:
    from feast import FeatureStore

# feast.protos.feast.serving.ServingService_pb2.FieldStatus.NOT_FOUND: the view has no row.
NOT_FOUND = 3


class OnlineStoreError(RuntimeError):
    """The online store could not be read (the service answers 503)."""


@dataclass(frozen=True)
class OnlineRow:
    """One entity's Feast features.

    Attributes:
        values: Feature name -> value (None when the store holds no value).
        unknown: Join keys the store knows nothing of -> the views keyed by them (all without
            a row). A view with no row while another view of the same keys has one gives
            nulls, as the point-in-time join does (e.g. no activity within the view's TTL).
    """

    values: dict[str, Any]
    unknown: dict[tuple[str, ...], list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class OnlineStore:
    """A Feast store and the fingerprints of the model's views in its registry.

    Attributes:
        store: The Feast feature store (its registry read once, when it was built).
        fingerprints: Feature view -> fingerprint of its definition.
    """

    store: FeatureStore | None
    fingerprints: dict[str, str]


def view_fingerprint(view: Any) -> str:
    """The fingerprint of a Feast feature view's definition.

    Args:
        view: A ``feast.FeatureView``.

    Returns:
        sha256 (hex) of the deterministic serialization of its spec, without the timestamps of
        its sources (which change on every ``apply``): equal definitions, equal fingerprints.
    """
    spec = type(view.to_proto().spec)()
    spec.CopyFrom(view.to_proto().spec)
    for source in (spec.batch_source, spec.stream_source):
        source.ClearField("meta")
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


class OnlineFeatures:
    """The model's Feast features from the online store, by entity.

    Args:
        settings: The platform settings (the Feast registry and online store).
        feature_views: Feature view -> its features the model uses
            (``ResolvedFeatures.feature_views``).
        view_keys: Feature view -> its join keys.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        feature_views: Mapping[str, list[str]],
        view_keys: Mapping[str, list[str]],
    ) -> None:
        self._settings = settings
        self._views = {view: list(names) for view, names in feature_views.items()}
        self._groups: dict[tuple[str, ...], list[str]] = {}
        for view in self._views:
            self._groups.setdefault(tuple(view_keys[view]), []).append(view)
        self.refs = [f"{view}:{name}" for view, names in self._views.items() for name in names]
        self._current = OnlineStore(store=None, fingerprints={})
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> OnlineStore:
        """The store in use and its fingerprints."""
        return self._current

    def refresh(self) -> OnlineStore:
        """Read the Feast registry again; swap the new store in when the views changed.

        Returns:
            The store in use afterwards.

        Raises:
            LookupError: A view the model uses is not in the Feast registry.
        """
        if not self._views:
            return self._current
        stamp = _registry_stamp(self._settings.feast_registry)
        if stamp is not None and stamp == self._stamp and self._current.store is not None:
            # Unchanged registry file: building a store and reading it again every poll cost
            # the calls arriving meanwhile (bench/serving.py's p99).
            return self._current
        store = feature_store(self._settings)
        fingerprints: dict[str, str] = {}
        with quiet_feast():
            from feast.errors import FeatureViewNotFoundException

            for view in self._views:
                try:
                    fingerprints[view] = view_fingerprint(store.get_feature_view(view))
                except FeatureViewNotFoundException:
                    raise LookupError(
                        f"feature view '{view}' is not in the Feast registry at "
                        f"{self._settings.feast_registry}; materialize 'features/{view}'"
                    ) from None
        with self._lock:
            if self._current.store is None or fingerprints != self._current.fingerprints:
                self._current = OnlineStore(store=store, fingerprints=fingerprints)
            self._stamp = stamp
        return self._current

    def lookup(self, store: OnlineStore, entities: Sequence[Mapping[str, Any]]) -> list[OnlineRow]:
        """The features of each entity, with the join keys the store knows nothing of.

        Args:
            store: The store to read (``current``, taken once per call).
            entities: Join key -> value, one mapping per entity.

        Returns:
            One row per entity, in order.

        Raises:
            OnlineStoreError: The store is not ready or Feast failed to read it.
        """
        if not self.refs:
            return [OnlineRow(values={}) for _ in entities]
        if store.store is None:
            raise OnlineStoreError("the Feast registry has not been read yet")
        # No quiet_feast here: its warnings.catch_warnings is process-wide, not thread-safe.
        try:
            response = store.store.get_online_features(
                features=self.refs, entity_rows=[dict(e) for e in entities]
            )
            values = response.to_dict()
        except Exception as error:  # any backend (SQLite, Redis...) failure: the call is a 503
            raise OnlineStoreError(f"{type(error).__name__}: {error}") from error
        proto = response.proto
        statuses = {
            name: result.statuses
            for name, result in zip(proto.metadata.feature_names.val, proto.results, strict=True)
        }
        rows = []
        for index in range(len(entities)):
            missing = {
                view
                for view, names in self._views.items()
                if all(statuses[name][index] == NOT_FOUND for name in names)
            }
            unknown = {
                keys: views for keys, views in self._groups.items() if missing.issuperset(views)
            }
            row = {
                name: values[name][index]
                for names in self._views.values()
                for name in names
                if name in values
            }
            rows.append(OnlineRow(values=row, unknown=unknown))
        return rows


def _registry_stamp(registry: str) -> tuple[int, int] | None:
    """A local registry file's modification time and size; None for a URL or a missing file."""
    if "://" in registry:
        return None
    try:
        status = os.stat(registry)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size
