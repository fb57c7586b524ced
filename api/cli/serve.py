"""`pm-ops serve`: the API on granian, and the projections in a child process.

Granian does the HTTP in Rust (tokio): a connection costs a task, not a Python
thread, so clients that send half their headers hold nothing the app needs and are
cut off after HEADER_READ_TIMEOUT_MS. Each worker accepts at most
CONNECTIONS_PER_WORKER connections and runs WSGI requests on blocking threads; the
Guard (api/wsgi_guard.py) reads bodies before a request takes one of `--threads`
app slots, so a body trickling in cannot starve the app either."""

import gc
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
from pathlib import Path
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
METRICS_DIRECTORY_PREFIX = "pm-ops-metrics-"  # then serve's pid


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
            f"pm-ops serving on http://{host}:{port} ({config.database_url.split('://')[0]}):"
            f" {workers} worker{'s' if workers > 1 else ''}, {threads} requests at a time"
            f" each; a slow client waits for its body on a thread of its own (up to"
            f" {CONNECTIONS_PER_WORKER} a worker), not on those",
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
    reads the variable when first imported, so it is set before anything imports it.
    The directory bears serve's pid and is removed when serve ends; one that a SIGKILL
    left behind is removed by the next start (on the same temporary directory)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    _sweep_metrics_directories()
    directory = tempfile.mkdtemp(prefix=f"{METRICS_DIRECTORY_PREFIX}{os.getpid()}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sweep_metrics_directories() -> None:
    """Remove the metrics directories of serve processes that no longer exist: only
    ours (pm-ops-metrics-PID-…), never one whose serve still runs."""
    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_DIRECTORY_PREFIX}*"):
        pid, separator, _ = path.name.removeprefix(METRICS_DIRECTORY_PREFIX).partition("-")
        if separator and pid.isdigit() and path.is_dir() and not _serve_may_run(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _serve_may_run(pid: int) -> bool:
    """False only when no process has this pid (or it is ours, which has made no
    directory yet: that one is a predecessor's, one that had the same pid)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
            app = create_app(build_services(config, create_tables=False))
            # What start-up made (modules, the app, its tables) lives as long as the
            # worker: frozen out of the collector, a full collection no longer walks it
            # (one took 18 ms, a request's tail latency).
            gc.collect()
            gc.freeze()
            return app

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


# Granian's start-up warning about its thread count (granian 2.8.7, server/mp.py: WSGI
# with more blocking threads than 2 x cores + 1); the serving line says what ours are for.
GRANIAN_THREADS_WARNING = "Configuration allows spawning up to "


class _ThreadsExplained(logging.Filter):
    """Drops granian's thread-count warning. It advises `backpressure`, which serve already
    sets to the same bound; most of those threads only wait for a slow client's body
    (api/wsgi_guard.py), and `--threads` bounds the ones that run the app."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(GRANIAN_THREADS_WARNING)


# Granian's messages and access log go to stderr, like ours (its default is stdout).
_LOGGING = {
    "filters": {"threads_explained": {"()": _ThreadsExplained}},
    "handlers": {
        "console": {
            "formatter": "generic",
            "class": "logging.StreamHandler",
            "filters": ["threads_explained"],
        },
        "access": {"formatter": "access", "class": "logging.StreamHandler"},
    },
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
