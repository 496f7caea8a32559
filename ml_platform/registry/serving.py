"""What a registered model serves: its ``champion`` alias and, while one runs, its ``canary``.

The prediction service and the lifecycle read both aliases, the canary's traffic share and its
start time from one registered model (``serving_state``); ``set_canary`` and ``clear_canary``
write them. ``ModelRegistry`` exposes each as a method; MLflow is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ml_platform.core.helpers import redact_url
from ml_platform.registry.mlflow_env import RegistryUnavailableError, is_missing_alias
from ml_platform.registry.tags import (
    CANARY_ALIAS,
    CHAMPION_ALIAS,
    TAG_CANARY_SHARE,
    TAG_CANARY_SINCE,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException


@dataclass(frozen=True)
class ServingState:
    """What the registry says a model serves: its champion and, when one runs, its canary.

    Attributes:
        champion: The version the ``champion`` alias points at, or None.
        canary: The version the ``canary`` alias points at, or None.
        canary_share: The canary's share of the traffic in [0, 1]; 0 without a canary.
        canary_since: When the canary started (UTC), or None without a canary.
    """

    champion: str | None
    canary: str | None
    canary_share: float = 0.0
    canary_since: datetime | None = None


def champion_version(client: MlflowClient, registry_uri: str, model_name: str) -> str | None:
    """The version the ``champion`` alias points at.

    Args:
        client: The MLflow client.
        registry_uri: The model registry URI (shown redacted in errors).
        model_name: The registered model.

    Returns:
        The version, or None when the model or the alias does not exist.

    Raises:
        RegistryUnavailableError: MLflow failed for any other reason (server down, auth,
            internal error): an unknown champion is never read as "no champion".
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as error:
        if is_missing_alias(error, CHAMPION_ALIAS):
            return None
        shown, detail = _redacted(registry_uri, error)
        raise RegistryUnavailableError(
            f"cannot read the '{CHAMPION_ALIAS}' alias of model '{model_name}' from MLflow at "
            f"{shown} ({error.error_code}: {detail}); "
            "nothing was evaluated or promoted against an unknown champion: check that the "
            "tracking server is up and the credentials are valid, then retry"
        ) from error


def local_store_exists(registry_uri: str) -> bool:
    """Whether the registry exists: False only for a local SQLite file not created yet.

    Args:
        registry_uri: The model registry URI.

    Returns:
        False for ``sqlite:///<path>`` with no file at the path, else True.
    """
    prefix = "sqlite:///"
    return not (
        registry_uri.startswith(prefix) and not Path(registry_uri.removeprefix(prefix)).exists()
    )


def champion_versions(client: MlflowClient, registry_uri: str) -> dict[str, str]:
    """Every registered model's ``champion`` alias, read in one search (not one per model).

    A local SQLite backend that does not exist yet holds no model: nothing is imported or
    created then (the champion sensor ticks every few minutes from the first start).

    Args:
        client: The MLflow client.
        registry_uri: The model registry URI (shown redacted in errors).

    Returns:
        The version the alias points at, by registered model; models without it left out.

    Raises:
        RegistryUnavailableError: MLflow could not answer (server down, auth, internal
            error): an unknown champion is never read as "no champion".
    """
    if not local_store_exists(registry_uri):
        return {}
    from mlflow.exceptions import MlflowException

    found: dict[str, str] = {}
    token = None
    try:
        while True:
            page = client.search_registered_models(max_results=1000, page_token=token)
            for model in page:
                version = (model.aliases or {}).get(CHAMPION_ALIAS)
                if version is not None:
                    found[model.name] = str(version)
            token = page.token
            if not token:
                return found
    except MlflowException as error:
        shown, detail = _redacted(registry_uri, error)
        raise RegistryUnavailableError(
            f"cannot list the '{CHAMPION_ALIAS}' aliases of the registered models from MLflow "
            f"at {shown} ({error.error_code}: {detail}); "
            "check that the tracking server is up and the credentials are valid, then retry"
        ) from error


def serving_state(client: MlflowClient, registry_uri: str, model_name: str) -> ServingState:
    """The champion, the canary and the canary's share and start, in one MLflow call.

    Args:
        client: The MLflow client.
        registry_uri: The model registry URI (shown redacted in errors).
        model_name: The registered model.

    Returns:
        The state; no champion and no canary when the model is not registered. A canary
        tag without the alias (or a share that is not a number in [0, 1]) counts as no
        canary.

    Raises:
        RegistryUnavailableError: MLflow failed for another reason than a missing model.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return ServingState(champion=None, canary=None)
        raise _unavailable(registry_uri, model_name, "serving state", error) from error
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    tags = dict(model.tags or {})
    champion, canary = aliases.get(CHAMPION_ALIAS), aliases.get(CANARY_ALIAS)
    share = _share(tags.get(TAG_CANARY_SHARE))
    if canary is None or share is None:
        return ServingState(champion=champion, canary=None)
    return ServingState(
        champion=champion,
        canary=canary,
        canary_share=share,
        canary_since=_utc(tags.get(TAG_CANARY_SINCE)),
    )


def set_canary(
    client: MlflowClient, model_name: str, version: str, share: float, since: datetime
) -> None:
    """Point the ``canary`` alias at ``version`` with its traffic share and start time.

    The tags are written before the alias, so a reader that sees the alias sees its share.

    Args:
        client: The MLflow client.
        model_name: The registered model.
        version: The version to serve as canary.
        share: Its share of the traffic, in (0, 1].
        since: When it starts (timezone-aware; stored as ISO-8601 UTC).

    Raises:
        ValueError: ``share`` is outside (0, 1] or ``since`` has no timezone.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(
            f"canary traffic share of '{model_name}' must be in (0, 1], got {share}; "
            "pass a fraction such as 0.2"
        )
    if since.tzinfo is None:
        raise ValueError(f"canary start of '{model_name}' must be timezone-aware: {since}")
    started = since.astimezone(UTC).isoformat()
    client.set_registered_model_tag(model_name, TAG_CANARY_SHARE, repr(float(share)))
    client.set_registered_model_tag(model_name, TAG_CANARY_SINCE, started)
    client.set_registered_model_alias(model_name, CANARY_ALIAS, version)


def clear_canary(client: MlflowClient, model_name: str) -> None:
    """Remove the ``canary`` alias, then its share and start tags (missing ones are fine).

    Args:
        client: The MLflow client.
        model_name: The registered model.
    """
    from mlflow.exceptions import MlflowException

    aliases = client.get_registered_model(model_name).aliases or {}
    if CANARY_ALIAS in aliases:
        client.delete_registered_model_alias(model_name, CANARY_ALIAS)
    tags = client.get_registered_model(model_name).tags or {}
    for tag in (TAG_CANARY_SHARE, TAG_CANARY_SINCE):
        if tag in tags:
            try:
                client.delete_registered_model_tag(model_name, tag)
            except MlflowException as error:  # deleted meanwhile by a concurrent clear
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise


def _redacted(registry_uri: str, error: MlflowException) -> tuple[str, str]:
    """The registry URI and MLflow's message, without credentials.

    MLflow's message repeats the URI, credentials included.
    """
    shown = redact_url(registry_uri)
    return shown, error.message.replace(registry_uri, shown)


def _unavailable(
    registry_uri: str, model_name: str, what: str, error: MlflowException
) -> RegistryUnavailableError:
    """The error saying MLflow could not answer ``what`` (credentials redacted)."""
    shown, detail = _redacted(registry_uri, error)
    return RegistryUnavailableError(
        f"cannot read the {what} of model '{model_name}' from MLflow at {shown} "
        f"({error.error_code}: {detail}); check that the tracking server is up and the "
        "credentials are valid, then retry"
    )


def _share(value: str | None) -> float | None:
    """A canary share tag as a fraction in [0, 1], or None when missing or not one."""
    try:
        share = float(value) if value is not None else None
    except ValueError:
        return None
    return share if share is not None and 0.0 <= share <= 1.0 else None


def _utc(value: str | None) -> datetime | None:
    """An ISO-8601 tag as an aware UTC datetime (naive means UTC), or None when unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
