"""Who may call the prediction service: API keys from the deployment's secrets, by name.

Keys come from ``ML_PLATFORM_SERVING_API_KEYS`` (``name:key,name2:key2``) and from the file
``ML_PLATFORM_SERVING_API_KEYS_FILE`` names (a mounted secret: one ``name:key`` per line, ``#``
comments and blank lines ignored). A caller presents a key as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``; the service knows the caller by the key's NAME, which is what the call
trail, the logs and the metrics show. A key itself is never logged, shown in an error or
recorded: errors about a malformed entry name its source and position, not its text.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

API_KEYS_ENV = "ML_PLATFORM_SERVING_API_KEYS"
API_KEYS_FILE_ENV = "ML_PLATFORM_SERVING_API_KEYS_FILE"
ANONYMOUS = "anonymous"
"""The caller of every call when the service runs with ``--allow-anonymous``."""
MIN_KEY_LENGTH = 16
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
NEW_KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class ApiKeyError(ValueError):
    """The API keys given to the service cannot be used (the message never holds a key)."""


@dataclass(frozen=True)
class ApiKeys:
    """The keys the service accepts, by caller name.

    Attributes:
        keys: (name, key as bytes) pairs; names and keys are unique.
        anonymous: Whether calls without a key are accepted (as caller ``anonymous``).
    """

    keys: tuple[tuple[str, bytes], ...] = ()
    anonymous: bool = False

    @property
    def names(self) -> list[str]:
        """The callers' names, in the order given."""
        return [name for name, _ in self.keys]

    def caller(self, presented: str | None) -> str | None:
        """The name of the caller whose key was presented.

        Every known key is compared in constant time, so the answer's timing says nothing
        about how much of a key was right, nor which key matched.

        Args:
            presented: The key from the request's headers (see `presented_key`), or None.

        Returns:
            The key's name; ``anonymous`` when anonymous calls are allowed and no key was
            presented (or any key, when the service has none); None when the call is refused
            (a wrong key is refused even when anonymous calls are allowed: it is a mistake).
        """
        if not presented or not self.keys:
            return ANONYMOUS if self.anonymous else None
        candidate = presented.encode()
        found = None
        for name, key in self.keys:
            if hmac.compare_digest(candidate, key) and found is None:
                found = name
        return found


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``X-API-Key``.

    Args:
        authorization: The ``Authorization`` header, if any.
        api_key: The ``X-API-Key`` header, if any.

    Returns:
        The key, or None when neither header holds one.
    """
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def parse_api_keys(entries: list[str], source: str) -> dict[str, str]:
    """Parse ``name:key`` entries.

    Args:
        entries: The entries, e.g. the comma-separated parts of ``ML_PLATFORM_SERVING_API_KEYS``
            or the lines of the keys file (blank ones and ``#`` comments are skipped).
        source: Where they come from, for the error messages.

    Returns:
        Key by caller name.

    Raises:
        ApiKeyError: An entry has no ``:``, a bad name, a short key, or a name or key is given
            twice; the message names the source and entry number, never the key.
    """
    keys: dict[str, str] = {}
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        name, colon, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        where = f"{source}, entry {number}"
        if not colon:
            raise ApiKeyError(f"{where}: expected 'name:key' (no ':' found)")
        if not NAME_PATTERN.match(name):
            raise ApiKeyError(
                f"{where}: the caller name {name!r} must be 1-128 letters, digits or '_.@-', "
                "starting with a letter or digit (it is what the call trail records)"
            )
        if len(key) < MIN_KEY_LENGTH:
            raise ApiKeyError(
                f"{where}: the key of caller {name!r} is shorter than {MIN_KEY_LENGTH} "
                f"characters; generate one with: {NEW_KEY_HINT}"
            )
        if name in keys:
            raise ApiKeyError(f"{where}: caller {name!r} is given twice; keep one key per name")
        if key in keys.values():
            raise ApiKeyError(
                f"{where}: caller {name!r} has the same key as another caller; give each "
                "caller its own key, so the trail can tell them apart"
            )
        keys[name] = key
    return keys


def load_api_keys(
    environ: Mapping[str, str] | None = None, *, allow_anonymous: bool = False
) -> ApiKeys:
    """The API keys of the deployment: the variable's and the file's, together.

    Args:
        environ: The environment (default: ``os.environ``).
        allow_anonymous: Accept calls without a valid key, as caller ``anonymous``.

    Returns:
        The keys.

    Raises:
        ApiKeyError: An entry is malformed, a name or key is given in both places, the file
            cannot be read, or there is no key at all and anonymous calls are not allowed.
    """
    env = os.environ if environ is None else environ
    keys = parse_api_keys(env.get(API_KEYS_ENV, "").split(","), API_KEYS_ENV)
    path = env.get(API_KEYS_FILE_ENV, "").strip()
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise ApiKeyError(
                f"{API_KEYS_FILE_ENV}={path}: cannot read the keys file ({error.strerror}); "
                "mount the secret there or unset the variable"
            ) from None
        from_file = parse_api_keys(lines, f"{API_KEYS_FILE_ENV} ({path})")
        both = sorted(set(keys) & set(from_file))
        if both:
            raise ApiKeyError(
                f"callers {both} are given in both {API_KEYS_ENV} and {API_KEYS_FILE_ENV}; "
                "keep each caller in one place"
            )
        if set(keys.values()) & set(from_file.values()):
            raise ApiKeyError(
                f"a key in {API_KEYS_FILE_ENV} is also given in {API_KEYS_ENV} under another "
                "name; give each caller its own key"
            )
        keys.update(from_file)
    if not keys and not allow_anonymous:
        raise ApiKeyError(
            f"no API key: set {API_KEYS_ENV}='name:key' (or {API_KEYS_FILE_ENV} to a file of "
            f"'name:key' lines; generate a key with: {NEW_KEY_HINT}), or start the service "
            "with --allow-anonymous to accept every call as caller 'anonymous'"
        )
    pairs = tuple((name, key.encode()) for name, key in keys.items())
    return ApiKeys(keys=pairs, anonymous=allow_anonymous)
