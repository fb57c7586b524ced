"""A small client for Customer.io's Track API (PUT a profile, POST an event).

Not the official `customerio` package: its errors are strings holding the URL and
the request body (a person's email), without the response (no status code, no
Retry-After), it builds `https://` URLs itself, and it retries 5xx silently inside
urllib3 (on https only, so a test against http:// would not see what production
does). Here every answer comes back as a status the feed can act on, the client
only paces requests, and the feed decides about retries.
"""

import base64
import email.utils
import http.client
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import orjson

REGION_URLS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
ANSWER_CHARS = 500


@dataclass(frozen=True)
class CustomerIOSettings:
    """What the Customer.io feed needs, built by the composition root from the environment."""

    site_id: str
    api_key: str = field(repr=False)
    region: str = "us"
    track_url: str | None = None  # overrides the region's host (tests, staging)
    rate: float = 50.0  # requests per second

    @property
    def base_url(self) -> str:
        return (self.track_url or REGION_URLS[self.region]).rstrip("/")


@dataclass(frozen=True)
class Answer:
    status: int
    text: str  # Customer.io's answer, cut short
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """Try again later: throttled, a server error, or our credentials refused (a
        setting to fix, not this person's fault)."""
        return self.status in (401, 403, 408, 429) or self.status >= 500


class TrackAPI:
    """One persistent connection, requests paced to `settings.rate` per second.
    Connection errors and timeouts raise OSError or http.client.HTTPException."""

    def __init__(self, settings: CustomerIOSettings, *, timeout: float = 10.0) -> None:
        parts = urlsplit(settings.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("CIO_TRACK_URL must be an http:// or https:// URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        secret = f"{settings.site_id}:{settings.api_key}".encode()
        self._auth = "Basic " + base64.b64encode(secret).decode()
        self._interval = 1.0 / settings.rate
        self._next = 0.0
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None

    def identify(self, identifier: str, attributes: dict[str, object]) -> Answer:
        return self._request("PUT", f"/api/v1/customers/{quote(identifier, safe='')}", attributes)

    def track(self, identifier: str, event: dict[str, object]) -> Answer:
        path = f"/api/v1/customers/{quote(identifier, safe='')}/events"
        return self._request("POST", path, event)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: dict[str, object]) -> Answer:
        self._pace()
        payload = orjson.dumps(body)
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "User-Agent": "pm-ops",
        }
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, payload, headers)
                response = conn.getresponse()
                text = response.read().decode("utf-8", "replace")
                break
            except (ConnectionResetError, BrokenPipeError):
                self.close()
                # A kept-alive connection the server closed while idle: once more on a
                # new one (safe: a PUT of full values, an event Customer.io knows by id).
                if not reused or attempt == 2:
                    raise
            except BaseException:
                self.close()  # a half-used connection is never reused
                raise
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        retry_after = parse_retry_after(response.getheader("Retry-After"))
        return Answer(response.status, " ".join(text.split())[:ANSWER_CHARS], retry_after)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _pace(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            time.sleep(wait)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
