"""Run the real `pm-ops serve` (gunicorn) on a free loopback port, for tests."""

import os
import shutil
import socket
import subprocess
import sys
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
    port = free_port()
    environment = {**os.environ, "OPS_DATABASE_URL": database_url, **(env or {})}
    process = subprocess.Popen(
        [pm_ops(), "serve", "--port", str(port), *args],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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
                    raise RuntimeError(
                        process.stderr.read().decode() if process.stderr else ""
                    ) from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
