"""A throwaway PostgreSQL server for tests: Debian's package, one cluster per test session.

``postgres_server`` runs ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin`` on a
free port of 127.0.0.1 with trust authentication, in a temporary directory, and removes it at the
end of the session. ``postgres_url`` gives each test a database of its own. Without the binaries
the tests skip with the install command; ``ML_PLATFORM_REQUIRE_POSTGRES=1`` (set by ``.ci/run``)
turns that skip into a failure, so CI cannot pass without Postgres.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "ML_PLATFORM_REQUIRE_POSTGRES"
INSTALL_COMMAND = "apt-get install -y --no-install-recommends postgresql"
BINARIES_GLOB = "/usr/lib/postgresql/*/bin"
# initdb refuses to run as root; Debian's package creates this user.
SERVER_USER = "postgres"
# Throwaway data: no durability, and room for the concurrency tests' processes and pools.
SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
)


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster on 127.0.0.1, superuser ``postgres`` without a password."""

    port: int
    directory: Path
    host: str = "127.0.0.1"
    user: str = "postgres"

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` (CREATE DATABASE cannot run in a transaction) and return its URL."""
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending the connections that pools cached by URL still hold on it."""
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _execute(self, statement: str) -> None:
        import psycopg2

        connection = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres"
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` directory, or None."""
    found = [
        directory
        for directory in Path("/").glob(BINARIES_GLOB.lstrip("/"))
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists()
    ]
    return max(found, key=lambda path: int(path.parent.name), default=None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    done = subprocess.run(_as_server_user(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )


def start_server(binaries: Path) -> PostgresServer:
    """``initdb`` a cluster in a new temporary directory and start it on a free port."""
    directory = Path(tempfile.mkdtemp(prefix="ml-platform-postgres-"))
    data, sockets, log = directory / "data", directory / "sockets", directory / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (directory, sockets):
            shutil.chown(path, SERVER_USER, SERVER_USER)
    try:
        _run(
            [
                str(binaries / "initdb"),
                f"--pgdata={data}",
                f"--username={SERVER_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        return PostgresServer(
            port=_start_on_a_free_port(binaries, data, sockets, log), directory=directory
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _start_on_a_free_port(binaries: Path, data: Path, sockets: Path, log: Path) -> int:
    """Start the server and return its port; another process can take a free port before the
    server binds it, so a refused start is tried again on a new port."""
    attempts = 3
    for attempt in range(1, attempts + 1):
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} {SERVER_OPTIONS}"
        try:
            _run(
                [
                    *(str(binaries / "pg_ctl"), "start", "--wait", "--timeout=60"),
                    *(f"--pgdata={data}", f"--log={log}", f"--options={options}"),
                ]
            )
        except RuntimeError as error:
            if attempt == attempts:
                raise RuntimeError(f"{error}\nserver log:\n{_read(log)}") from error
        else:
            return port
    raise AssertionError("unreachable: the last attempt returns or raises")


def stop_server(server: PostgresServer, binaries: Path) -> None:
    """Stop the cluster at once (its data is thrown away) and remove its directory."""
    try:
        _run(
            [
                *(str(binaries / "pg_ctl"), "stop", "--wait", "--mode=immediate"),
                f"--pgdata={server.directory / 'data'}",
            ]
        )
    finally:
        shutil.rmtree(server.directory, ignore_errors=True)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else "(no log)"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session, from Debian's package."""
    binaries = server_binaries()
    if binaries is None:
        message = (
            f"PostgreSQL server binaries not found under {BINARIES_GLOB}; "
            f"install Debian's package: {INSTALL_COMMAND}"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {message}")
        pytest.skip(message)
    server = start_server(binaries)
    try:
        yield server
    finally:
        stop_server(server, binaries)


@pytest.fixture
def postgres_databases(postgres_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """Make new, empty databases for one test: each call returns another database's URL."""
    created: list[str] = []

    def create() -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        created.append(name)
        return postgres_server.create_database(name)

    yield create
    for name in created:
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """A new, empty database for one test: ``postgresql+psycopg2://postgres@127.0.0.1:<port>/<db>``."""
    return postgres_databases()
