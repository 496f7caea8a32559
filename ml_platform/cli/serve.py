"""``ml-platform serve MODEL``: the model's online prediction service."""

from __future__ import annotations

import argparse
import os

from ml_platform.cli.common import catalog_with, model_command, passive_thread_waits
from ml_platform.cli.output import echo

SERVE_HELP = """\
Serve a model's predictions over HTTP: its champion, and its canary for a sticky share of the
entities (the `canary` alias and its traffic share, set by the deployment job). A call sends the
entity's join keys and the request-time features; the other features come from the Feast online
store, read with the references the training set used. The answer holds the prediction, the
version and a request id; every call (refused and failed ones too) is recorded in the call trail
with its caller (see `ml-platform calls`). Alias changes are picked up every --refresh-seconds,
without a restart; a version whose gates did not pass, or a champion moved outside the platform,
is never served. SIGTERM or Ctrl-C stops it gracefully: calls in flight finish, the trail is
flushed.

API keys (required unless --allow-anonymous): ML_PLATFORM_SERVING_API_KEYS="name:key,name2:key2"
and/or ML_PLATFORM_SERVING_API_KEYS_FILE=/path/to/file with one `name:key` per line. Callers send
`Authorization: Bearer <key>` (or `X-API-Key: <key>`); the trail, logs and metrics name the key's
name, never the key. Calls are journaled under ML_PLATFORM_SERVING_JOURNAL_DIR (default
$ML_PLATFORM_HOME/serving/journal/MODEL) before they reach the audit database;
ML_PLATFORM_SERVING_JOURNAL_FSYNC=always also syncs each call to the disk before its answer
(default interval: a killed process loses no answered call, a power loss may lose the last 0.2 s).

Endpoints: POST /v1/models/MODEL/predict, POST /v1/models/MODEL/predict/batch, GET /healthz,
GET /readyz, GET /metrics, GET /docs (the OpenAPI schema at /openapi.json).

examples:
  ml-platform serve fraud_detection --host 0.0.0.0 --port 8080 --refresh-seconds 10
  ML_PLATFORM_SERVING_API_KEYS="checkout:$(cat checkout.key)" ml-platform serve fraud_detection"""


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """Add ``ml-platform serve`` and its options.

    Args:
        commands: The root parser's subcommands.
    """
    serve = model_command(
        commands,
        "serve",
        "serve a model's predictions over HTTP (champion and canary, audited)",
        SERVE_HELP,
        "the model's name, as its spec's `name`",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the interface to listen on (default: 127.0.0.1; in a container: 0.0.0.0). "
        "Example: --host 0.0.0.0",
    )
    serve.add_argument(
        "--port", type=int, default=8080, help="the TCP port (default: 8080). Example: --port 9000"
    )
    serve.add_argument(
        "--refresh-seconds",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how often the registry is read for a new champion or canary (default: 5). "
        "Example: --refresh-seconds 30",
    )
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="accept calls without an API key, recorded as caller 'anonymous' (local trials "
        "only; a wrong key is still refused). Example: --allow-anonymous",
    )


def serve(model: str, host: str, port: int, refresh_seconds: float, allow_anonymous: bool) -> int:
    """Run the prediction service of ``model`` until it is stopped.

    Args:
        model: The model to serve.
        host: The interface to listen on.
        port: The TCP port.
        refresh_seconds: Seconds between two polls of the registry.
        allow_anonymous: Accept calls without a key.

    Returns:
        The exit status: 0 after a graceful stop, 2 for an unknown model, bad options or no
        usable API key.
    """
    from ml_platform.core.helpers import unknown
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.serving.auth import ApiKeyError
    from ml_platform.serving.server import ServeOptions, build_app, run

    if not 0 < port < 65536:
        echo(f"--port must be between 1 and 65535, got {port}", err=True)
        return 2
    if not refresh_seconds > 0:
        echo(f"--refresh-seconds must be positive, got {refresh_seconds}", err=True)
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A one-row predict took 10 ms with torch's spinning waits on a shared 2-core machine, 2 ms
    # without (bench/serving.py).
    passive_thread_waits()
    catalog = catalog_with([])
    if model not in catalog.models:
        for error in catalog.errors:
            echo(str(error), err=True)
        echo(unknown("model", model, catalog.models), err=True)
        return 2
    options = ServeOptions(host, port, refresh_seconds, allow_anonymous)
    try:
        app = build_app(model, catalog, PlatformSettings.from_env(), options)
    except ApiKeyError as error:
        echo(f"cannot serve '{model}': {error}", err=True)
        return 2
    run(app, options)
    return 0
