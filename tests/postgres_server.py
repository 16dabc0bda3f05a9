"""A real PostgreSQL server for the tests: started once per session, one fresh database per test.

Uses the machine's PostgreSQL binaries (``PERSONALISE_PG_BIN``, else /usr/lib/postgresql/15/bin, else
``pg_config --bindir``). initdb and postgres refuse to run as root, so as root they run as the ``postgres``
user (``runuser``), in a temporary directory that user owns; the server listens on 127.0.0.1 only, on a free
port. Without binaries the tests that need the server are skipped with a message saying how to install them.
fsync is off: these are throwaway databases (durability across a crash is not what these tests check).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = ("PostgreSQL server binaries not found: install them (Debian/Ubuntu: "
                "`apt-get install postgresql-15`) or set PERSONALISE_PG_BIN to the directory holding initdb")


def _bin_dir() -> Path | None:
    candidates = [os.environ.get("PERSONALISE_PG_BIN"), "/usr/lib/postgresql/15/bin"]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    _n: itertools.count  # type: ignore[type-arg]

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL (``postgresql://...``, as PERSONALISE_DB takes it)."""
        import psycopg
        name = f"t{os.getpid()}_{next(self._n)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class PostgresUnavailable(RuntimeError):
    """No server can be started here; the message says how to make one available."""


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server on 127.0.0.1 (the tests' fixture and the benchmark use it)."""
    bindir = _bin_dir()
    if bindir is None:
        raise PostgresUnavailable(INSTALL_HINT)
    root = Path(tempfile.mkdtemp(prefix="personalise-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb/postgres refuse root: run them as the postgres user, in a dir it owns
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable("running as root and no `postgres` user to run PostgreSQL as: create "
                                      "one (`useradd postgres`) or run the tests as another user") from None
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    port = _free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--locale=C", "--no-sync"], check=True, capture_output=True)
    opts = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200"
    started = subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts,
                              "-w", "-t", "60", "start"], capture_output=True, text=True)
    if started.returncode != 0:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{text}")
    try:
        yield PostgresServer(port, itertools.count())
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="psycopg 3 missing: pip install 'psycopg[binary]'")
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh live-store URL, once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()
