"""Which versions the service serves: the champion and a canary, followed without a restart.

``VersionWatcher.refresh`` reads the registry (the ``champion`` and ``canary`` aliases, the
canary's share and start, in one call), decides what may be served, loads any new version, and
only then swaps the whole serving state in one assignment: a call reads ``current`` once, so it
finishes on the versions it started with, and no call ever waits for a model to load.

A version is served only when its evaluation gates passed (version tag ``ml_platform.evaluation``
is ``passed``), or, for the champion only, when an audited override made it champion
(``ml_platform.promotion`` is ``override``). A champion alias the audit log does not explain (moved
outside the platform, see ``lifecycle.champion_audit``) is never switched to: the service keeps the
champion it serves (on a fresh start, the version the audit log explains), and says why in its
log, its metrics (``ml_platform_serving_refused_version``) and ``/readyz``. The same holds for a
version that cannot be loaded or reads inputs the spec no longer provides.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ml_platform.core.audit import AuditLog
from ml_platform.lifecycle.champion_audit import ChampionCheck, explained_champion
from ml_platform.lifecycle.records import TAG_EVALUATION
from ml_platform.registry.client import ModelRegistry
from ml_platform.registry.tags import TAG_PROMOTION
from ml_platform.serving.features import OnlineFeatures, OnlineStore
from ml_platform.serving.metrics import ServingMetrics
from ml_platform.serving.routing import CANARY, CHAMPION, Role

if TYPE_CHECKING:
    from ml_platform.training.flavors.base import FittedModel

LOGGER = logging.getLogger("ml_platform.serving")

Loader = Callable[[str], "FittedModel"]


@dataclass(frozen=True)
class ServedVersion:
    """A loaded version and the role it serves in.

    Attributes:
        version: The registered MLflow version.
        role: ``champion`` or ``canary``.
        model: The loaded model.
    """

    version: str
    role: Role
    model: FittedModel


@dataclass(frozen=True)
class Serving:
    """Everything a call needs, swapped as one (read it once per call).

    Attributes:
        champion: The champion served, None until a servable one is loaded.
        canary: The canary served, if any.
        canary_share: The canary's share of the entities (0 without a canary).
        canary_since: When the canary started, if known.
        online: The Feast store and its views' fingerprints.
        problems: Why a version is refused or nothing is served (shown by ``/readyz``).
    """

    champion: ServedVersion | None = None
    canary: ServedVersion | None = None
    canary_share: float = 0.0
    canary_since: datetime | None = None
    online: OnlineStore = field(default_factory=lambda: OnlineStore(None, {}))
    problems: tuple[str, ...] = ()

    def served(self) -> list[tuple[str, str, float]]:
        """(version, role, share of entities) of each version served."""
        shares = []
        if self.champion is not None:
            shares.append((self.champion.version, CHAMPION, 1.0 - self.canary_share))
        if self.canary is not None:
            shares.append((self.canary.version, CANARY, self.canary_share))
        return shares


@dataclass(frozen=True)
class Refusal:
    """A version the service will not serve now, and why.

    Attributes:
        version: The version.
        reason: A short reason (a metric label): ``gates``, ``unexplained``, ``load``, ``inputs``.
        detail: The full sentence, with the fix.
    """

    version: str
    reason: str
    detail: str


class VersionWatcher:
    """Polls the registry and keeps ``current`` on the servable champion and canary.

    Args:
        model: The model's name.
        inputs: The columns the service can give the model (``ResolvedFeatures.model_inputs``).
        registry: The MLflow registry.
        audit: The audit log (what explains the champion alias).
        online: The Feast features (refreshed with each poll).
        metrics: The service's metrics.
        refresh_seconds: Seconds between two polls.
        loader: Loads a version (default: ``registry.load_model``).
    """

    def __init__(
        self,
        model: str,
        inputs: list[str],
        registry: ModelRegistry,
        audit: AuditLog,
        online: OnlineFeatures,
        metrics: ServingMetrics,
        refresh_seconds: float,
        loader: Loader | None = None,
    ) -> None:
        self.model = model
        self._inputs = set(inputs)
        self._registry = registry
        self._audit = audit
        self._online = online
        self._metrics = metrics
        self.refresh_seconds = refresh_seconds
        self._load = loader or (lambda version: registry.load_model(model, version))
        self._loaded: dict[str, FittedModel] = {}
        self._current = Serving(problems=("the registry has not been read yet",))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refreshed = threading.Event()
        self._refusals: dict[str, str] = {}

    @property
    def current(self) -> Serving:
        """What calls are served with now (one atomic read)."""
        return self._current

    def wait_first_refresh(self, timeout: float) -> bool:
        """Wait until the first poll ended (successfully or not).

        Args:
            timeout: Seconds to wait at most.

        Returns:
            Whether it ended in time.
        """
        return self._refreshed.wait(timeout)

    def start(self) -> None:
        """Poll now and then every ``refresh_seconds``, in a daemon thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"serving-versions-{self.model}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling (a model being loaded finishes first, up to ``timeout``).

        Args:
            timeout: Seconds to wait for the thread.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as error:  # the service keeps what it serves; next poll retries
                self._metrics.refresh_failed(self.model)
                problem = f"reading the registry failed ({type(error).__name__}: {error})"
                LOGGER.warning("%s: %s; still serving what was loaded", self.model, problem)
                current = self._current
                self._current = Serving(
                    champion=current.champion,
                    canary=current.canary,
                    canary_share=current.canary_share,
                    canary_since=current.canary_since,
                    online=current.online,
                    problems=(problem,) if current.champion is None else current.problems,
                )
            finally:
                self._refreshed.set()
            self._stop.wait(self.refresh_seconds)

    def refresh(self) -> Serving:
        """One poll: read the aliases, load what is new and servable, swap it in.

        Returns:
            The serving state now in use.

        Raises:
            RegistryUnavailableError: MLflow could not be read (nothing changed).
            LookupError: A feature view of the model is missing from the Feast registry.
        """
        online = self._online.refresh()
        state = self._registry.serving_state(self.model)
        current = self._current
        refusals: list[Refusal] = []
        problems: list[str] = []

        champion = self._champion(state.champion, current, refusals)
        if state.champion is None and champion is not None:
            problems.append(
                f"the 'champion' alias of '{self.model}' was removed; still serving "
                f"v{champion.version} until a version is promoted"
            )
        if champion is None:
            problems.append(
                f"no servable champion of '{self.model}': "
                + (
                    "the 'champion' alias is not set; train and promote a version"
                    if state.champion is None and not refusals
                    else "see the refused versions"
                )
            )
        canary: ServedVersion | None = None
        share = 0.0
        if state.canary is not None and champion is not None:
            if state.canary == champion.version:
                canary = None
            else:
                loaded = self._servable(state.canary, refusals, champion=False)
                if loaded is not None:
                    canary = ServedVersion(state.canary, CANARY, loaded)
                    share = state.canary_share
        problems += [f"v{r.version} refused: {r.detail}" for r in refusals]
        serving = Serving(
            champion=champion,
            canary=canary,
            canary_share=share if canary is not None else 0.0,
            canary_since=state.canary_since if canary is not None else None,
            online=online,
            problems=tuple(problems),
        )
        self._current = serving
        self._announce(current, serving, refusals)
        in_use = {v.version for v in (champion, canary) if v is not None}
        self._loaded = {v: m for v, m in self._loaded.items() if v in in_use}
        return serving

    def _champion(
        self, alias: str | None, current: Serving, refusals: list[Refusal]
    ) -> ServedVersion | None:
        """The champion to serve: the alias's version when servable, else the one served."""
        if alias is None:
            return current.champion
        if current.champion is not None and current.champion.version == alias:
            return ServedVersion(alias, CHAMPION, current.champion.model)
        explained = explained_champion(self._audit, self.model)
        check = ChampionCheck(self.model, alias, explained)
        fallback = current.champion
        if check.unexplained:
            refusals.append(
                Refusal(
                    alias,
                    "unexplained",
                    f"{check.describe()}; the service keeps serving "
                    + (
                        f"v{fallback.version}"
                        if fallback
                        else f"v{explained}"
                        if explained
                        else "nothing"
                    )
                    + f". Fix: run the job '{self.model}_promote_override' to keep "
                    f"v{alias} (audited), or move the alias back",
                )
            )
            if fallback is not None or explained is None:
                return fallback
            alias = explained  # a fresh start: the champion the audit log explains
        loaded = self._servable(alias, refusals, champion=True)
        if loaded is None:
            return fallback
        return ServedVersion(alias, CHAMPION, loaded)

    def _servable(
        self, version: str, refusals: list[Refusal], *, champion: bool
    ) -> FittedModel | None:
        """The loaded version when it may be served, else None with the refusal added."""
        if version in self._loaded:
            return self._loaded[version]
        tags = self._registry.client.get_model_version(self.model, version).tags or {}
        evaluation = tags.get(TAG_EVALUATION, "pending")
        overridden = champion and tags.get(TAG_PROMOTION) == "override"
        if evaluation != "passed" and not overridden:
            refusals.append(
                Refusal(
                    version,
                    "gates",
                    f"its evaluation gates did not pass ({TAG_EVALUATION}={evaluation}); only "
                    "a version whose gates passed (or an audited override, for the champion) "
                    "is served",
                )
            )
            return None
        try:
            loaded = self._load(version)
        except Exception as error:  # a broken artifact must not stop the service
            refusals.append(
                Refusal(
                    version, "load", f"it could not be loaded ({type(error).__name__}: {error})"
                )
            )
            return None
        schema = loaded.schema
        missing = sorted((set(schema.numeric) | set(schema.categorical)) - self._inputs)
        if missing:
            refusals.append(
                Refusal(
                    version,
                    "inputs",
                    f"it reads {missing}, which the spec's features no longer provide; retrain it "
                    "or restore those features",
                )
            )
            return None
        self._loaded[version] = loaded
        return loaded

    def _announce(self, before: Serving, after: Serving, refusals: list[Refusal]) -> None:
        """Log what changed, and set the traffic and refusal metrics."""
        was = {(v, r) for v, r, _ in before.served()}
        for version, role, share in after.served():
            if (version, role) not in was or (role == CANARY and share != before.canary_share):
                LOGGER.info(
                    "%s: serving v%s as %s (%.0f%% of entities)",
                    self.model,
                    version,
                    role,
                    100 * share,
                )
        refused = {r.version: r.detail for r in refusals}
        for version, detail in refused.items():
            if self._refusals.get(version) != detail:
                LOGGER.warning("%s: not serving v%s: %s", self.model, version, detail)
        self._refusals = refused
        self._metrics.set_traffic(self.model, after.served())
        self._metrics.set_refusals(self.model, [(r.version, r.reason) for r in refusals])
