"""Real PostgreSQL and Redis servers on 127.0.0.1 for the scale-out tests (Debian's
``postgresql`` and ``redis-server``, installed by ``make peers``), each in a throwaway folder
on a free port, stopped on exit."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apoe_assets_tests.mlflow_server import free_port

STARTUP_SECONDS = 60


def postgres_binary(name: str) -> str | None:
    """``initdb``/``pg_ctl`` on PATH or in Debian's versioned folder (not on PATH there)."""
    found = shutil.which(name)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found or (candidates[-1] if candidates else None)


def missing_servers() -> list[str]:
    """The Debian packages whose servers these tests need and this machine lacks."""
    missing = [] if postgres_binary("initdb") and postgres_binary("pg_ctl") else ["postgresql"]
    return missing + ([] if shutil.which("redis-server") else ["redis-server"])


@dataclass(frozen=True)
class Postgres:
    """A running server: where it listens and a user (its password made for this run)."""

    port: int
    user: str
    password: str
    host: str = "127.0.0.1"

    def connect(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=database)

    def create_database(self, name: str) -> None:
        connection = self.connect()
        connection.autocommit = True  # CREATE DATABASE runs outside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def query(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            connection.close()


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """``initdb`` into a fresh folder (as user ``postgres`` when run as root, which PostgreSQL
    refuses to be), password authentication, listening on 127.0.0.1 only."""
    as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="apoe-pg-"))
    server = Postgres(port=free_port(), user="apoe", password=secrets.token_urlsafe(18))
    (folder / "pw").write_text(server.password)
    if as_server_user:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
    data = folder / "data"
    pg_ctl = [*as_server_user, postgres_binary("pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_server_user, postgres_binary("initdb"), "-D", str(data), "-U",
                        server.user, f"--pwfile={folder / 'pw'}", "--auth=scram-sha-256",
                        "--encoding=UTF8", "--locale=C"], check=True, capture_output=True)
        options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} -c fsync=off"
        subprocess.run([*pg_ctl, "-o", options, "-l", str(folder / "server.log"), "-w",
                        "-t", str(STARTUP_SECONDS), "start"], check=True, capture_output=True)
        yield server
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """``redis-server`` on 127.0.0.1 with no persistence; yields its URL."""
    port = free_port()
    log = (folder / "redis.log").open("w")
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, (folder / "redis.log").read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.2)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
