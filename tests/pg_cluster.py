"""A throwaway PostgreSQL cluster on a free loopback port, that a test may stop,
kill and restart — never the shared server the other tests use.

initdb refuses to run as root, so under root the cluster belongs to the `postgres`
system user (created by Debian's postgresql packages), or to `pmops-test`, created
here when neither exists."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import IN_CI
from tests.server import free_port

TEST_USER = "pmops-test"


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return Path(candidates[-1]) if candidates else None


def _run_as() -> str | None:
    """The user to run PostgreSQL as (None: ourselves, when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", TEST_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", TEST_USER], check=True)
    return TEST_USER


class Cluster:
    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self._bin = bin_dir
        self._user = _run_as()
        self._root = Path(tempfile.mkdtemp(prefix="pm-ops-pg-"))
        self._data = self._root / "data"
        self._log = self._root / "postgres.log"
        self.port = free_port()
        if self._user:
            shutil.chown(self._root, self._user)
        self._run(
            "initdb",
            "-D",
            str(self._data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._root} "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self._data), "-l", str(self._log), "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """fast: clients are disconnected; immediate: as if the machine lost power."""
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self._root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        argv = [str(self._bin / program), *args]
        if self._user:
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
        if result.returncode != 0:
            log = self._log.read_text() if self._log.exists() else ""
            raise subprocess.CalledProcessError(
                result.returncode, argv, result.stdout, result.stderr + log[-2000:]
            )


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> float:
    """Seconds until predicate() was true; raises AssertionError after `timeout`."""
    started = time.monotonic()
    while True:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(interval)
