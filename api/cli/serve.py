import os
import tempfile
from typing import Any

import click

from api.config import Config


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
@click.pass_obj
def serve(
    config: Config, host: str, port: int, workers: int, threads: int, no_projections: bool
) -> None:
    """Serve the API with gunicorn (and, unless told not to, the projections)."""
    # Every worker writes its metrics here so /metrics adds them up; prometheus_client
    # reads this when first imported, so it is set before anything imports it.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="pm-ops-metrics-"))
    from gunicorn.app.base import BaseApplication

    from api.services import build_services

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
                "accesslog": "-",
                "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms',
                "child_exit": _child_exit,
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
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _start_projections(config: Config) -> Any:
    """Start the projection runners beside the API; returns a stop function (or None).

    They are threads of this (gunicorn master) process: each becomes active only
    while it holds its projection's lock, so a separate `pm-ops projections run`
    (or another `serve`) simply stands by. The forked workers inherit a copy of
    this stack; the stop function only acts in the process that started them."""
    from api.metrics import Metrics
    from projections import start_projections

    metrics = Metrics()

    def on_lag(name: str, lag: int) -> None:
        metrics.projection_lag.labels(projection=name).set(lag)

    running = start_projections(config, on_lag=on_lag)
    owner = os.getpid()

    def stop() -> None:
        if os.getpid() == owner:
            running.stop()

    return stop
