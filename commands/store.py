"""Where the event log lives: one database URL, read once, handed to every layer.

The composition root (api/bootstrap.py) builds a `Store` from configuration and
passes it down; commands and projections never read the environment themselves."""

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_DATABASE_URL = "sqlite:///var/ops.db"


class ConfigError(Exception):
    """A setting that cannot work; the message says how to fix it."""


@dataclass(frozen=True)
class Store:
    url: str = DEFAULT_DATABASE_URL

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @property
    def schema(self) -> str | None:
        """PostgreSQL schema from ?schema=NAME (default public); None on SQLite."""
        if not self.is_postgres:
            return None
        return parse_qs(urlsplit(self.url).query).get("schema", ["public"])[0]

    def table(self, name: str) -> str:
        """A table name qualified for this store, for our own SQL beside the log."""
        return f'"{self.schema}".{name}' if self.schema else name

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///").split("?")[0]

    @property
    def is_memory(self) -> bool:
        return not self.is_postgres and (
            ":memory:" in self.sqlite_path or "mode=memory" in self.url
        )

    def eventsourcing_env(self) -> dict[str, str]:
        """Translate the database URL into the eventsourcing library's settings."""
        if self.url.startswith("sqlite:///"):
            path = self.url.removeprefix("sqlite:///")
            if not self.is_memory:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": path,
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        if self.is_postgres:
            return {"PERSISTENCE_MODULE": "eventsourcing.postgres", **self.postgres_env()}
        raise ConfigError(
            "OPS_DATABASE_URL must start with sqlite:/// or postgresql:// "
            "(for example sqlite:///var/ops.db)"
        )

    def postgres_env(self) -> dict[str, str]:
        parts = urlsplit(self.url)
        dbname = parts.path.lstrip("/")
        if not dbname or not parts.hostname:
            raise ConfigError(
                "OPS_DATABASE_URL must name a host and a database: "
                "postgresql://user:pass@host:port/db"
            )
        return {
            "POSTGRES_DBNAME": unquote(dbname),
            "POSTGRES_HOST": parts.hostname,
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": self.schema or "public",
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "24",  # request threads + committer + rate-limit thread
            # The recorder retries a failed connection 10 times: keep each try short so an
            # unreachable store answers 503 in seconds, not the better part of a minute.
            "POSTGRES_CONNECT_TIMEOUT": "1",
            "POSTGRES_LOCK_TIMEOUT": "10",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
        }

    def identity(self) -> str:
        """Which log this is, for feeds that must tell two environments apart."""
        if self.is_postgres:
            env = self.postgres_env()
            return (
                f"pg:{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
                f"/{self.schema}"
            )
        return "sqlite:" + str(Path(self.sqlite_path).resolve())
