"""Configuration from the environment (SPEC §5); CLI flags override."""

import ipaddress
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from commands.store import DEFAULT_DATABASE_URL, ConfigError, Store

if TYPE_CHECKING:
    from projections.slack import SlackSettings
    from projections.track_api import CustomerIOSettings

CIO_REGIONS = ("us", "eu")

__all__ = ["Config", "ConfigError", "Store"]


@dataclass(frozen=True)
class Config:
    database_url: str = DEFAULT_DATABASE_URL
    public_url: str = "http://127.0.0.1:8000"
    slack_bot_token: str | None = None
    slack_channel: str = "#ops-webhooks"
    slack_api_url: str | None = None
    rate_limit_per_minute: int = 600
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    secret_key: str | None = None  # seals Customer.io signing keys (commands/sealing.py)
    cio_site_id: str | None = None
    cio_track_api_key: str | None = field(default=None, repr=False)
    cio_region: str = "us"
    cio_track_url: str | None = None
    cio_sync_rate: float = 50.0

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
            secret_key=env.get("OPS_SECRET_KEY") or None,
            **_customerio(env),
        )

    def with_database(self, url: str | None) -> "Config":
        return replace(self, database_url=url) if url else self

    @property
    def store(self) -> Store:
        return Store(self.database_url)

    @property
    def slack(self) -> "SlackSettings":
        from projections.slack import SlackSettings  # here: projections import this module

        return SlackSettings(self.slack_bot_token, self.slack_channel, self.slack_api_url)

    @property
    def customerio(self) -> "CustomerIOSettings | None":
        """The Customer.io feed's settings; None (the feed is off) without credentials."""
        from projections.track_api import CustomerIOSettings

        if not (self.cio_site_id and self.cio_track_api_key):
            return None
        return CustomerIOSettings(
            self.cio_site_id,
            self.cio_track_api_key,
            self.cio_region,
            self.cio_track_url,
            self.cio_sync_rate,
        )

    # The store's own questions, asked of the config for brevity.
    @property
    def is_postgres(self) -> bool:
        return self.store.is_postgres

    @property
    def schema(self) -> str | None:
        return self.store.schema

    def table(self, name: str) -> str:
        return self.store.table(name)

    def eventsourcing_env(self) -> dict[str, str]:
        return self.store.eventsourcing_env()


def _customerio(env: Any) -> dict[str, Any]:
    region = (env.get("CIO_REGION") or "us").strip().lower()
    if region not in CIO_REGIONS:
        raise ConfigError("CIO_REGION must be us or eu (the region of your Customer.io workspace)")
    url = (env.get("CIO_TRACK_URL") or "").strip() or None
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("CIO_TRACK_URL must start with https:// (or http:// for a test server)")
    try:
        rate = float(env.get("CIO_SYNC_RATE") or 50)
    except ValueError:
        rate = -1.0
    if not 0 < rate <= 100:
        raise ConfigError(
            "CIO_SYNC_RATE must be a number of requests per second above 0 and at most 100 "
            "(Customer.io's Track API asks for no more than 100)"
        )
    return {
        "cio_site_id": (env.get("CIO_SITE_ID") or "").strip() or None,
        "cio_track_api_key": (env.get("CIO_TRACK_API_KEY") or "").strip() or None,
        "cio_region": region,
        "cio_track_url": url,
        "cio_sync_rate": rate,
    }


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
