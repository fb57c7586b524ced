"""Configuration from the environment (SPEC §5); CLI flags override."""

import ipaddress
import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_DATABASE_URL = "sqlite:///var/ops.db"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    database_url: str = DEFAULT_DATABASE_URL
    public_url: str = "http://127.0.0.1:8000"
    slack_bot_token: str | None = None
    slack_channel: str = "#ops-webhooks"
    slack_api_url: str | None = None
    rate_limit_per_minute: int = 600
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        try:
            rate = int(env.get("OPS_RATE_LIMIT_PER_MINUTE") or 600)
        except ValueError:
            raise ConfigError("OPS_RATE_LIMIT_PER_MINUTE must be a whole number") from None
        return cls(
            database_url=env.get("OPS_DATABASE_URL") or DEFAULT_DATABASE_URL,
            public_url=(env.get("OPS_PUBLIC_URL") or "http://127.0.0.1:8000").rstrip("/"),
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_channel=env.get("OPS_SLACK_CHANNEL") or "#ops-webhooks",
            slack_api_url=env.get("SLACK_API_URL") or None,
            rate_limit_per_minute=rate,
            trusted_proxies=_networks(env.get("OPS_TRUSTED_PROXIES") or ""),
        )

    def with_database(self, url: str | None) -> "Config":
        return replace(self, database_url=url) if url else self

    @property
    def schema(self) -> str | None:
        """PostgreSQL schema from ?schema=NAME (default public); None on SQLite."""
        if not self.is_postgres:
            return None
        return parse_qs(urlsplit(self.database_url).query).get("schema", ["public"])[0]

    def table(self, name: str) -> str:
        """A table name qualified for this store, for our own SQL beside the log."""
        return f'"{self.schema}".{name}' if self.schema else name

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    def eventsourcing_env(self) -> dict[str, str]:
        """Translate OPS_DATABASE_URL into the eventsourcing library's settings."""
        url = self.database_url
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            if path != ":memory:" and "mode=memory" not in path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": path,
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        if self.is_postgres:
            parts = urlsplit(url)
            dbname = parts.path.lstrip("/")
            if not dbname or not parts.hostname:
                raise ConfigError(
                    "OPS_DATABASE_URL must name a host and a database: "
                    "postgresql://user:pass@host:port/db"
                )
            return {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
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
        raise ConfigError(
            "OPS_DATABASE_URL must start with sqlite:/// or postgresql:// "
            "(for example sqlite:///var/ops.db)"
        )


def _networks(text: str) -> tuple[str, ...]:
    networks = tuple(part.strip() for part in text.split(",") if part.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                f"OPS_TRUSTED_PROXIES: {network!r} is not a network like 10.0.0.0/8"
            ) from None
    return networks
