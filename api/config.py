"""Configuration from the environment (SPEC §5); CLI flags override."""

import ipaddress
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from commands.store import DEFAULT_DATABASE_URL, ConfigError, Store

if TYPE_CHECKING:
    from projections.checkpoints import CheckpointSettings
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
    checkpoint_key: str | None = None  # a path: the key itself is never held here
    checkpoint_origin: str | None = None  # default: the public URL's host + /pm-ops
    checkpoint_interval: float = 60.0
    checkpoint_dir: str | None = None
    checkpoint_s3: str | None = None
    checkpoint_s3_endpoint: str | None = None
    checkpoint_retention_days: int = 2557
    checkpoint_slack_channel: str | None = None
    tsa_urls: tuple[str, ...] = ()
    tsa_roots: str | None = None

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
            **_checkpoints(env),
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

    @property
    def checkpoints(self) -> "CheckpointSettings | None":
        """The signed checkpoints' settings; None (they are off) without OPS_CHECKPOINT_KEY."""
        from projections.checkpoints import CheckpointSettings

        if not self.checkpoint_key:
            return None
        host = urlsplit(self.public_url).netloc.rpartition("@")[2] or "localhost"
        return CheckpointSettings(
            key_path=self.checkpoint_key,
            origin=self.checkpoint_origin or f"{host}/pm-ops",
            interval=self.checkpoint_interval,
            directory=self.checkpoint_dir,
            s3_url=self.checkpoint_s3,
            s3_endpoint=self.checkpoint_s3_endpoint,
            retention_days=self.checkpoint_retention_days,
            slack_channel=self.checkpoint_slack_channel,
            tsa_urls=self.tsa_urls,
            tsa_roots=self.tsa_roots,
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


def _checkpoints(env: Any) -> dict[str, Any]:
    """SPEC §10's settings; a key file that cannot be used is an error at start."""
    from projections.checkpoints import KeyUnavailable, load_key

    key = (env.get("OPS_CHECKPOINT_KEY") or "").strip() or None
    if key is not None:
        try:
            load_key(key)
        except KeyUnavailable as error:
            raise ConfigError(str(error)) from None
    interval = _number(env, "OPS_CHECKPOINT_INTERVAL", 60.0, "a number of seconds above 0")
    days = _number(env, "OPS_CHECKPOINT_RETENTION_DAYS", 2557, "a whole number of days above 0")
    if days != int(days):
        raise ConfigError("OPS_CHECKPOINT_RETENTION_DAYS must be a whole number of days above 0")
    s3 = (env.get("OPS_CHECKPOINT_S3") or "").strip() or None
    if s3 is not None:
        from projections.witness_stores import parse_s3_url

        try:
            parse_s3_url(s3)
        except ValueError as error:
            raise ConfigError(f"OPS_CHECKPOINT_S3: {error}") from None
    roots = (env.get("OPS_TSA_ROOTS") or "").strip() or None
    if roots is not None:
        from projections.timestamps import TimestampError, load_roots

        try:
            load_roots(roots)
        except TimestampError as error:
            raise ConfigError(f"OPS_TSA_ROOTS: {error}") from None
    urls = tuple(u.strip() for u in (env.get("OPS_TSA_URLS") or "").split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"OPS_TSA_URLS: {url!r} is not an http:// or https:// URL")
    return {
        "checkpoint_key": key,
        "checkpoint_origin": (env.get("OPS_CHECKPOINT_ORIGIN") or "").strip() or None,
        "checkpoint_interval": interval,
        "checkpoint_dir": (env.get("OPS_CHECKPOINT_DIR") or "").strip() or None,
        "checkpoint_s3": s3,
        "checkpoint_s3_endpoint": (env.get("OPS_CHECKPOINT_S3_ENDPOINT") or "").strip() or None,
        "checkpoint_retention_days": int(days),
        "checkpoint_slack_channel": (env.get("OPS_CHECKPOINT_SLACK_CHANNEL") or "").strip() or None,
        "tsa_urls": urls,
        "tsa_roots": roots,
    }


def _number(env: Any, name: str, default: float, what: str) -> float:
    text = (env.get(name) or "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name} must be {what}")
    return value


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
