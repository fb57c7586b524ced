"""Run the real `pm-ops serve` (granian) on a free loopback port, for tests."""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO


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
    database_url: str,
    *args: str,
    env: dict[str, str] | None = None,
    output: IO[bytes] | None = None,
) -> Iterator[str]:
    with running_server_process(database_url, *args, env=env, output=output) as (base, _process):
        yield base


@contextmanager
def running_server_process(
    database_url: str,
    *args: str,
    env: dict[str, str] | None = None,
    output: IO[bytes] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    environment = {**os.environ, "OPS_DATABASE_URL": database_url, **(env or {})}
    argv = [pm_ops(), "serve", "--port", str(port), *args]
    with launched(argv, port, environment, stop_seconds=15, output=output) as started:
        yield started


class DidNotStart(RuntimeError):
    """The server exited, or never answered; the message is the end of its log."""


@contextmanager
def launched(
    argv: list[str],
    port: int,
    env: dict[str, str],
    *,
    start_seconds: float = 30,
    stop_seconds: float = 20,
    any_answer: bool = False,
    output: IO[bytes] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run a server listening on `port`, wait until GET /healthz answers (with
    `any_answer`, an error status counts: a server without /healthz), stop it
    afterwards. One that exits or never answers raises DidNotStart. `output` (a file
    opened for reading and writing) receives the server's stdout and stderr; without
    it, stdout is dropped and stderr kept only to explain a failed start."""
    # The server's log goes to a file: an unread pipe would fill and stall the server.
    with ExitStack() as files:
        log = output if output is not None else files.enter_context(tempfile.TemporaryFile())
        stdout = subprocess.DEVNULL if output is None else log
        process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_seconds
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                        break
                except urllib.error.HTTPError:
                    if any_answer:
                        break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise DidNotStart(log.read().decode(errors="replace")[-4000:])
                time.sleep(0.1)
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=stop_seconds)
            except subprocess.TimeoutExpired:
                process.kill()


ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"


def post(
    base: str, path: str, body: dict, token: str, key: str | None = None, timeout: float = 30
) -> tuple[int, bytes, float]:
    """POST a JSON body; returns status, body and seconds taken (0 status: no answer)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if key:
        headers["X-CIO-Idempotency-Key"] = key
    request = urllib.request.Request(base + path, json.dumps(body).encode(), headers, method="POST")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic() - started
    except OSError:
        return 0, b"", time.monotonic() - started


def get(base: str, path: str, timeout: float = 30) -> tuple[int, bytes, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic() - started
    except OSError:
        return 0, b"", time.monotonic() - started


@dataclass
class Seeded:
    token: str
    people: list[int]
    communities: list[int]


def seed(database_url: str, people: int = 20, communities: int = 5) -> Seeded:
    """Tables, a directory of random people and communities, and a token for both operations."""
    from api.bootstrap import bootstrap
    from api.config import Config
    from commands.application import CommunityRow, PersonRow

    person_ids = random.sample(range(10**6, 10**12), people)
    community_ids = random.sample(range(10**6, 10**12), communities)
    with bootstrap(Config(database_url=database_url)) as services:
        services.app.import_people(
            [PersonRow(0, p, f"p{p}.{uuid.uuid4().hex[:6]}@example.com") for p in person_ids]
        )
        services.app.import_communities([CommunityRow(0, c, f"c{c}") for c in community_ids])
        token = services.app.issue_token(
            name=f"fault-{uuid.uuid4().hex[:8]}",
            actor="Customer.io",
            scopes=["community:add", "code:set"],
            allow_cidrs=[],
            rate_limit=100_000,
            cio_signing_key=None,
        )
    return Seeded(token, person_ids, community_ids)


def descendants(pid: int) -> set[int]:
    """Every live process below pid (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
