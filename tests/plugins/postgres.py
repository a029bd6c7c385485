"""pytest fixtures: a real PostgreSQL 15 for the test session (owned by the store area).

``postgres_server`` starts one server per session in a temp dir (initdb + pg_ctl, unix socket in
the temp dir, TCP on a free loopback port, ``fsync=off``), as the ``postgres`` system user when the
tests run as root (PostgreSQL refuses to run as root). It yields the URL of the database
``egresswatch``; ``postgres_url`` gives each test a fresh, empty database of its own.

When the Debian package is missing the fixtures skip, naming what is missing; CI installs it
(``./dev.sh test``). When it is installed but the server does not start, the tests fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, dbname: str = "egresswatch") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)


def _bindir() -> Path | None:
    for pattern in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/*/bin"):
        for d in sorted(glob.glob(pattern), reverse=True):
            if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
                return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed: pip install 'egresswatch[postgres]'")
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' system user to run PostgreSQL as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and no runuser(1) to drop privileges for PostgreSQL")
        prefix = [runuser, "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="egresswatch-pg-"))
    data = tmp / "data"
    log = tmp / "server.log"
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    os.chmod(tmp, 0o700)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        opts = (
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50 "
            "-c shared_buffers=64MB"
        )
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts,
             "-w", "-t", "60", "start"],
            check=True, capture_output=True, env=env, timeout=90,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        out = getattr(e, "stderr", b"") or b""
        logtext = log.read_text(errors="replace") if log.exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
        # The binaries are here, so a server that will not start is a failure, not a skip.
        pytest.fail(
            f"PostgreSQL could not start ({e}): {out.decode(errors='replace')[-500:]} "
            f"{logtext[-500:]}"
        )
    server = PostgresServer("127.0.0.1", port, "postgres")
    try:
        server.admin("CREATE DATABASE egresswatch")
        yield server
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, env=env, timeout=60,
        )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database for one test; dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    postgres_server.admin(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
