"""Run a model's prediction service under uvicorn, with a graceful shutdown.

On SIGTERM (Kubernetes stopping the pod) or Ctrl-C, uvicorn stops accepting connections, lets the
calls in flight finish (up to ``GRACEFUL_SECONDS``), then the app's lifespan ends: the version
poller stops and the call trail is closed, so every recorded call is flushed to the audit
database (and anything still journaled after a kill is replayed by the next start).

uvicorn's own access log is off: the service writes one line per call itself (request id,
caller name, status, versions, latency), and nothing that reaches the log can hold a key.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from ml_platform.core.settings import PlatformSettings
from ml_platform.serving.auth import load_api_keys
from ml_platform.spec.catalog import Catalog

if TYPE_CHECKING:
    from fastapi import FastAPI

JOURNAL_DIR_ENV = "ML_PLATFORM_SERVING_JOURNAL_DIR"
GRACEFUL_SECONDS = 30
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class ServeOptions:
    """How the service runs.

    Attributes:
        host: The interface to listen on.
        port: The TCP port.
        refresh_seconds: Seconds between two polls of the registry for alias changes.
        allow_anonymous: Accept calls without a key (caller ``anonymous``).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    refresh_seconds: float = 5.0
    allow_anonymous: bool = False


def journal_dir(settings: PlatformSettings, model: str) -> Path:
    """Where the service journals calls before they reach the audit database.

    Args:
        settings: The platform settings (the home).
        model: The model served.

    Returns:
        ``ML_PLATFORM_SERVING_JOURNAL_DIR``, else ``$ML_PLATFORM_HOME/serving/journal/<model>``.
    """
    configured = os.environ.get(JOURNAL_DIR_ENV, "").strip()
    return Path(configured) if configured else settings.home / "serving" / "journal" / model


def log_config() -> dict[str, Any]:
    """The logging setup of uvicorn, with the platform's loggers on the same stream."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["platform"] = {"format": LOG_FORMAT}
    config["handlers"]["platform"] = {
        "class": "logging.StreamHandler",
        "formatter": "platform",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["ml_platform"] = {
        "handlers": ["platform"],
        "level": "INFO",
        "propagate": False,
    }
    return config


JOURNAL_FSYNC_ENV = "ML_PLATFORM_SERVING_JOURNAL_FSYNC"


def journal_fsync() -> Literal["interval", "always"]:
    """When the call journal reaches the disk: ``ML_PLATFORM_SERVING_JOURNAL_FSYNC``.

    ``interval`` (default): every acknowledged call survives a killed process, and is synced to
    the disk within the flush interval; ``always``: synced before the answer (group commit), so
    it also survives a power loss, on a journal volume that outlives the pod.

    Returns:
        The mode.

    Raises:
        ValueError: Another value is set.
    """
    value = os.environ.get(JOURNAL_FSYNC_ENV, "").strip().lower() or "interval"
    if value not in ("interval", "always"):
        raise ValueError(
            f"{JOURNAL_FSYNC_ENV}={value!r} is not a journal mode; use 'interval' or 'always'"
        )
    return value  # type: ignore[return-value]


def build_app(
    model: str, catalog: Catalog, settings: PlatformSettings, options: ServeOptions
) -> FastAPI:
    """The app serving ``model`` (keys read from the environment).

    Args:
        model: A model of ``catalog``.
        catalog: The loaded specs.
        settings: The platform settings.
        options: How the service runs.

    Returns:
        The FastAPI app.

    Raises:
        ApiKeyError: No usable API key (and anonymous calls are not allowed).
    """
    from ml_platform.serving.app import create_app
    from ml_platform.serving.journal import CallTrail
    from ml_platform.serving.service import PredictionService

    keys = load_api_keys(allow_anonymous=options.allow_anonymous)
    trail = CallTrail(settings.audit_url, journal_dir(settings, model), fsync=journal_fsync())
    service = PredictionService(
        catalog.models[model],
        catalog.resolved[model],
        catalog,
        settings,
        keys=keys,
        trail=trail,
        refresh_seconds=options.refresh_seconds,
    )
    return create_app(service)


def run(app: Any, options: ServeOptions) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down gracefully.

    Args:
        app: The FastAPI app.
        options: Host and port.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        access_log=False,
        log_config=log_config(),
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        lifespan="on",
        server_header=False,
    )
    logging.getLogger("ml_platform.serving").info(
        "serving on http://%s:%d (docs at /docs)", options.host, options.port
    )
    # uvicorn handles SIGTERM and SIGINT while it runs, then sends the signal again to the
    # handlers it found: after a graceful stop, the process ends with status 0.
    signal.signal(signal.SIGTERM, _stopped)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stopped gracefully too
        uvicorn.Server(config).run()


def _stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's handling: exit with status 0 (nothing is left to flush)."""
    raise SystemExit(0)
