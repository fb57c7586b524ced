import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import click

from api.config import Config

log = logging.getLogger("pm_ops.serve")


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
@click.option("--threads", default=16, show_default=True, type=click.IntRange(min=1))
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
    """Serve the API with gunicorn (and, unless told not to, the projections)."""
    # Every worker writes its metrics here so /metrics adds them up; prometheus_client
    # reads this when first imported, so it is set before anything imports it.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="pm-ops-metrics-"))
    from gunicorn.app.base import BaseApplication

    from api.bootstrap import build_services

    # Create the tables once, before any worker exists: concurrent CREATEs race.
    build_services(config).close()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "gthread",
                "threads": threads,
                "timeout": 60,
                "graceful_timeout": 10,
                "accesslog": "-" if access_log else None,
                "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms',
                "child_exit": _child_exit,
                # One fixed socket path per user: a second server on the machine would clash.
                "control_socket_disable": True,
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from api.app import create_app

            return create_app(build_services(config, create_tables=False))

    projections = None
    if not no_projections:
        projections = _start_projections(config)
    try:
        click.echo(
            f"pm-ops serving on http://{host}:{port} ({config.database_url.split('://')[0]})",
            err=True,
        )
        Server().run()
    finally:
        if projections is not None:
            projections()


def _child_exit(_server: Any, worker: Any) -> None:
    _forget_metrics_of(worker.pid)


def _start_projections(config: Config) -> Any:
    """Run the projections beside the API; returns a function that stops them."""
    return ProjectionsProcess(config).start().stop


class ProjectionsProcess:
    """`pm-ops projections run` as a child of serve, restarted if it dies.

    A child process rather than threads in the gunicorn master, which forks its
    workers: forking a process that has threads and open pools copies their locks
    mid-flight. The child holds each projection's lock, so a separate
    `pm-ops projections run` elsewhere simply stands by (and takes over while this
    one is being restarted)."""

    def __init__(self, config: Config) -> None:
        self._argv = [sys.executable, "-m", "api.cli", "projections", "run"]
        self._env = {**os.environ, "OPS_DATABASE_URL": config.database_url}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(
            target=self._supervise, name="pm-ops-projections", daemon=True
        )

    def start(self) -> "ProjectionsProcess":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout=20)

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
