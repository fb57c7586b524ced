"""`pm-ops serve`: the API on granian, and the projections in a child process.

Granian does the HTTP in Rust (tokio): a connection costs a task, not a Python
thread, so clients that send half their headers hold nothing the app needs and are
cut off after HEADER_READ_TIMEOUT_MS. Each worker accepts at most
CONNECTIONS_PER_WORKER connections and runs WSGI requests on blocking threads; the
Guard (api/wsgi_guard.py) reads bodies before a request takes one of `--threads`
app slots, so a body trickling in cannot starve the app either."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from api.config import Config
from api.lifeline import PARENT_PID_ENV, die_with_parent

log = logging.getLogger("pm_ops.serve")

CONNECTIONS_PER_WORKER = 1024  # the connection bound; more wait in the listen backlog
BACKLOG = 2048
HEADER_READ_TIMEOUT_MS = 5_000  # a request head (and an idle keep-alive) gets this long
SERVER_BUFFER_BYTES = 64 * 1024  # the read buffer; far larger heads get its own bare 431
WORKER_STOP_SECONDS = 3  # then a worker that has not finished is killed
PROJECTIONS_STOP_SECONDS = 3


def register(cli: click.Group) -> None:
    cli.add_command(serve)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="API processes; each runs threads that share group commits.",
)
@click.option(
    "--threads",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests each worker runs at once (slow clients wait outside these).",
)
@click.option("--no-projections", is_flag=True, help="Do not run the projections in this process.")
@click.option(
    "--access-log",
    is_flag=True,
    help="Log every request (refusals are always logged; /metrics counts everything).",
)
@click.pass_obj
def serve(
    config: Config,
    host: str,
    port: int,
    workers: int,
    threads: int,
    no_projections: bool,
    access_log: bool,
) -> None:
    """Serve the API with granian (and, unless told not to, the projections)."""
    with _metrics_directory():
        from api.bootstrap import build_services

        # Create the tables once, before any worker exists: concurrent CREATEs race.
        build_services(config).close()
        projections = None if no_projections else ProjectionsProcess(config).start()
        server = _granian(host, port, workers, access_log, projections)
        click.echo(
            f"pm-ops serving on http://{host}:{port} ({config.database_url.split('://')[0]})",
            err=True,
        )
        try:
            server.serve(target_loader=_worker_app(config, threads), wrap_loader=False)
        finally:
            if projections is not None:
                projections.stop()


@contextmanager
def _metrics_directory() -> Iterator[None]:
    """Every worker writes its metrics here so /metrics adds them up. prometheus_client
    reads the variable when first imported, so it is set before anything imports it;
    the directory is removed when serve ends (a SIGKILL leaves it behind)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory = tempfile.mkdtemp(prefix="pm-ops-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _worker_app(config: Config, threads: int) -> Callable[[], Any]:
    """What each forked worker runs to build its app."""
    master = os.getpid()

    def load_app() -> Any:
        # SIGKILL: until granian installs the worker's own handlers, it still has the
        # master's, which would swallow a SIGTERM. A worker without its master is lost
        # anyway; a call it was running is retried under the same key.
        die_with_parent(master, signal.SIGKILL)
        from api.app import UNAVAILABLE, create_app
        from api.bootstrap import build_services
        from api.wsgi_guard import Guard, Starting

        def build() -> Any:
            _reach(config)  # a failed build leaves a pool behind: try the door first
            return create_app(build_services(config, create_tables=False))

        return Guard(Starting(build, UNAVAILABLE), threads)

    return load_app


def _reach(config: Config) -> None:
    """Raise unless the store answers (PostgreSQL: one short connection)."""
    if config.is_postgres:
        import psycopg

        env = config.eventsourcing_env()
        psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            connect_timeout=2,
        ).close()


def _granian(
    host: str, port: int, workers: int, access_log: bool, projections: "ProjectionsProcess | None"
) -> Any:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    class ApiServer(Server):  # type: ignore[misc,valid-type]
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            # Stop the projections now, beside the workers: nothing restarts from here on.
            if projections is not None:
                projections.begin_stop()
            super().signal_handler_interrupt(*args, **kwargs)

    return ApiServer(
        "pm-ops",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=workers,
        blocking_threads=CONNECTIONS_PER_WORKER,  # made on demand, idle ones retire
        backlog=BACKLOG,
        backpressure=CONNECTIONS_PER_WORKER,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEADER_READ_TIMEOUT_MS,
            keep_alive=True,
            max_buffer_size=SERVER_BUFFER_BYTES,
        ),
        respawn_failed_workers=True,  # a worker killed mid-load comes back
        workers_kill_timeout=WORKER_STOP_SECONDS,
        log_dictconfig=_LOGGING,
        log_access=access_log,
        log_access_format='%(addr)s "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms',
    )


# Granian's messages and access log go to stderr, like ours (its default is stdout).
_LOGGING = {
    "handlers": {
        "console": {"formatter": "generic", "class": "logging.StreamHandler"},
        "access": {"formatter": "access", "class": "logging.StreamHandler"},
    }
}


class ProjectionsProcess:
    """`pm-ops projections run` as a child of serve, restarted if it dies.

    A child process rather than threads in the server's master, which forks its
    workers: forking a process that has threads and open pools copies their locks
    mid-flight. The child holds each projection's lock, so a separate
    `pm-ops projections run` elsewhere simply stands by (and takes over while this
    one is being restarted). The child dies with serve, even when serve is killed
    (api/lifeline.py), so it never keeps those locks for a server that is gone."""

    def __init__(self, config: Config) -> None:
        self._argv = [sys.executable, "-m", "api.cli", "projections", "run"]
        self._env = {
            **os.environ,
            "OPS_DATABASE_URL": config.database_url,
            PARENT_PID_ENV: str(os.getpid()),
        }
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(
            target=self._supervise, name="pm-ops-projections", daemon=True
        )

    def start(self) -> "ProjectionsProcess":
        self._thread.start()
        return self

    def begin_stop(self) -> None:
        """No more restarts; ask the child to finish. Safe in a signal handler."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:  # a start in progress completes before we look
            process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=PROJECTIONS_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout=PROJECTIONS_STOP_SECONDS)

    def _supervise(self) -> None:
        delay = 1.0
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                self._process = process = subprocess.Popen(self._argv, env=self._env)
            code = process.wait()
            _forget_metrics_of(process.pid)  # its lag is no longer current
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning("projections process exited (code %s); restarting in %.0f s", code, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, 30.0)


def _forget_metrics_of(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
