"""Run the real `pm-ops serve` (granian) on a free loopback port, for tests."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pm_ops() -> str:
    found = shutil.which("pm-ops", path=str(Path(sys.executable).parent))
    assert found, "the pm-ops console script is not installed in this environment"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    with running_server_process(database_url, *args, env=env) as (base, _process):
        yield base


@contextmanager
def running_server_process(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    environment = {**os.environ, "OPS_DATABASE_URL": database_url, **(env or {})}
    # The server's log goes to a file: an unread pipe would fill and stall the server.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [pm_ops(), "serve", "--port", str(port), *args],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(log.read().decode(errors="replace")) from None
                    time.sleep(0.1)
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
