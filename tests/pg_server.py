"""A throwaway PostgreSQL server for tests: initdb into a temporary directory, listening on 127.0.0.1 on a free port,
password (scram-sha-256) authentication for one user, one database; stopped and deleted afterwards.

PostgreSQL refuses to run as root, so as root the server runs as a system user (created once with useradd). Used by
tests/test_sweeper_postgres.py through a session fixture; by hand:

    .venv/bin/python tests/pg_server.py     # starts one, prints its URL, stops it on Enter
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def default_bin() -> Path:
    """The newest installed server's bin directory (Debian installs /usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = Path(os.environ.get("FMNIST_PG_BIN") or default_bin())
SYSTEM_USER = "fmnist-pg"  # runs the server when the tests run as root
USER, DATABASE = "fmnist", "optuna"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    directory: Path
    port: int
    password: str
    run_as: str | None  # the system user when started by root

    def url(self, password: str | None = None, database: str = DATABASE) -> str:
        return f"postgresql://{USER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop"], self.run_as)
        shutil.rmtree(self.directory, ignore_errors=True)


def _run(cmd: list[str], user: str | None, timeout: int = 120) -> subprocess.CompletedProcess:
    # no inherited PG* variables: they would point the tools at another server
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
    result = subprocess.run(cmd, user=user, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:2])} failed ({result.returncode}): {(result.stderr or result.stdout)[-800:]}"
        )
    return result


def _system_user() -> str | None:
    """None when not root (the server runs as the current user); else the unprivileged user, created if needed."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER], None)
    return SYSTEM_USER


def start(password: str = "fmnist-test-pw-7Qx9") -> PgServer:
    """Start a server; RuntimeError says why one cannot be started (binaries missing, initdb failed, ...)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            raise RuntimeError(f"{PG_BIN / tool} not found (apt-get install postgresql, or set FMNIST_PG_BIN)")
    user = _system_user()
    # under /tmp (world-traversable), not pytest's tmp dir, which is private to the test user
    directory = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
    if user is not None:
        os.chown(directory, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    (directory / "pw").write_text(password + "\n")
    if user is not None:
        shutil.chown(directory / "pw", user)
    data, port = directory / "data", free_port()
    try:
        _run([str(PG_BIN / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={directory / 'pw'}",
              "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"], user)  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off -c max_connections=100"
        _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "server.log"),
              "-w", "-t", "60", "start"], user)  # fmt: skip
        server = PgServer(directory, port, password, user)
        _create_database(server)
        return server
    except Exception:
        log = directory / "server.log"
        tail = log.read_text()[-800:] if log.is_file() else ""
        subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user=user,
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(directory, ignore_errors=True)
        if tail:
            raise RuntimeError(f"PostgreSQL did not start: {tail}") from None
        raise


def _create_database(server: PgServer) -> None:
    import psycopg  # the driver SQLAlchemy 2.1 uses for postgresql:// (the sweeps use it too)

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg.connect(host="127.0.0.1", port=server.port, user=USER, password=server.password,
                                   dbname="postgres", connect_timeout=5, autocommit=True)  # fmt: skip
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with conn:  # autocommit: CREATE DATABASE cannot run in a transaction
        conn.execute(f"CREATE DATABASE {DATABASE}")


if __name__ == "__main__":
    pg = start()
    print(pg.url())
    try:
        input("Enter stops the server ")
    finally:
        pg.stop()
