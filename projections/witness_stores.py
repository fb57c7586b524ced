"""Places a signed checkpoint is kept outside the database: the witnesses' storage.

Each store keeps one note per tree size and never replaces one: offered the same bytes
again (a retry after a lost answer) it says nothing, offered other bytes for a size it
holds it raises `Contradiction`, the alarm the witness feed raises further. Beside a
note a store keeps extras, e.g. RFC 3161 time-stamps (suffix "tsr.0", "tsr.1", ...),
under the same rule. A store that cannot be used raises `StoreUnavailable`, whose
message is one sentence for the log (the feed retries).

- `DirectoryStore(path)`: `<size>.note` and `<size>.<suffix>` files in a directory that
  must exist (in production an off-host mount: a missing one is reported, not made on
  the local disk). A file appears whole or not at all: written to a temporary file,
  fsynced, hard-linked to its final name (which fails rather than replace anything),
  then the directory is fsynced. The filesystem must support hard links.
- `S3Store(bucket, prefix)`: one object per note, `<prefix>/<size>.note`, put under
  S3 Object Lock in COMPLIANCE mode until now + retention_days; the bucket must have
  Object Lock enabled. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID
  and AWS_SECRET_ACCESS_KEY, a profile, an instance role); the region from
  AWS_DEFAULT_REGION or the profile, else us-east-1. The credentials need
  s3:GetBucketObjectLockConfiguration, s3:ListBucket, s3:GetObject, s3:PutObject and
  s3:PutObjectRetention on the bucket (without ListBucket, S3 answers "access
  denied" instead of "no such key" and nothing can be put).

Names: a size is written in decimal without zero-padding; `sizes()` lists only names
of exactly that form, so anything else in the place (temporary files, extras, a
"007.note" someone copied in) is ignored.
"""

import datetime
import os
import re
import tempfile
from typing import Any, Protocol
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

NOTE_NAME = re.compile(r"(0|[1-9][0-9]*)\.note")
EXTRA_SUFFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_RETENTION_DAYS = 2557  # seven years, leap days included
DEFAULT_REGION = "us-east-1"


class StoreUnavailable(Exception):
    """The store cannot be read or written now; the message says which and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"the checkpoint store {where} is unavailable: {reason}")
        self.where = where
        self.reason = reason


class ObjectLockMissing(StoreUnavailable):
    """The bucket cannot keep objects unchangeable: a person must enable Object Lock."""


class Contradiction(Exception):
    """The store already holds other bytes under this size (and suffix): the log, or
    whoever signs it, says two different things about the same tree size."""

    def __init__(self, size: int, held: bytes, offered: bytes, suffix: str | None = None) -> None:
        what = f"checkpoint {size}" if suffix is None else f"the {suffix} of checkpoint {size}"
        super().__init__(f"{what} is already held with different content: refused")
        self.size = size
        self.held = held
        self.offered = offered
        self.suffix = suffix


class NoteStore(Protocol):
    name: str  # "directory", "s3"
    where: str  # for messages: the path, or s3://bucket/prefix

    def put(self, size: int, note: bytes) -> None:
        """Keep the note of this tree size; never replace one (see the module)."""

    def get(self, size: int) -> bytes | None:
        """The note of this tree size, if held."""

    def sizes(self) -> list[int]:
        """Every tree size held, ascending."""

    def latest(self) -> tuple[int, bytes] | None:
        """The largest tree size held and its note."""

    def put_extra(self, size: int, suffix: str, data: bytes) -> None:
        """Keep a file beside the note of this size (e.g. "tsr.0"); never replace one."""

    def get_extra(self, size: int, suffix: str) -> bytes | None:
        """A file kept beside the note of this size, if held."""


def note_name(size: int) -> str:
    return f"{_checked(size)}.note"


def extra_name(size: int, suffix: str) -> str:
    if not EXTRA_SUFFIX.fullmatch(suffix) or suffix == "note":
        raise ValueError(f"{suffix!r} cannot name a file kept beside a checkpoint")
    return f"{_checked(size)}.{suffix}"


def _checked(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"a tree size is a whole number of at least 0, not {size!r}")
    return size


def _same_as_held(size: int, held: bytes | None, offered: bytes, suffix: str | None) -> bool:
    """True when these very bytes are held already; a Contradiction when others are."""
    if held is None:
        return False
    if held == offered:
        return True
    raise Contradiction(size, held, offered, suffix)


def _sizes_in(names: list[str]) -> list[int]:
    return sorted(int(match[1]) for name in names if (match := NOTE_NAME.fullmatch(name)))


class DirectoryStore:
    """Checkpoints as files in a directory (OPS_CHECKPOINT_DIR)."""

    name = "directory"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.where = self.path

    def put(self, size: int, note: bytes) -> None:
        self._keep(size, note_name(size), note, None)

    def put_extra(self, size: int, suffix: str, data: bytes) -> None:
        self._keep(size, extra_name(size, suffix), data, suffix)

    def get(self, size: int) -> bytes | None:
        return self._read(note_name(size))

    def get_extra(self, size: int, suffix: str) -> bytes | None:
        return self._read(extra_name(size, suffix))

    def sizes(self) -> list[int]:
        try:
            return _sizes_in(os.listdir(self.path))
        except OSError as error:
            raise self._unavailable("listing it", error) from None

    def latest(self) -> tuple[int, bytes] | None:
        for size in reversed(self.sizes()):
            note = self.get(size)
            if note is not None:
                return size, note
        return None

    def _keep(self, size: int, name: str, data: bytes, suffix: str | None) -> None:
        if _same_as_held(size, self._read(name), data, suffix):
            return
        temporary = self._write_temporary(name, data)
        try:
            os.link(temporary, os.path.join(self.path, name))
        except FileExistsError:  # another writer got there first: agree or object
            if not _same_as_held(size, self._read(name), data, suffix):
                raise StoreUnavailable(self.where, f"{name} vanished as it was made") from None
            return
        except OSError as error:
            raise self._unavailable(f"naming {name}", error) from None
        finally:
            self._remove(temporary)
        self._sync_directory()

    def _write_temporary(self, name: str, data: bytes) -> str:
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=self.path)
        except OSError as error:
            raise self._unavailable(f"writing {name}", error) from None
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
                os.fchmod(file.fileno(), 0o444)  # kept, not edited: read-only for all
        except OSError as error:
            self._remove(temporary)
            raise self._unavailable(f"writing {name}", error) from None
        return temporary

    def _read(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.path, name), "rb") as file:
                return file.read()
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise self._unavailable("reading it", FileNotFoundError()) from None
            return None
        except OSError as error:
            raise self._unavailable(f"reading {name}", error) from None

    def _sync_directory(self) -> None:
        """The new name survives a crash only once the directory itself is on disk."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            raise self._unavailable("syncing it", error) from None

    @staticmethod
    def _remove(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _unavailable(self, doing: str, error: OSError) -> StoreUnavailable:
        if isinstance(error, FileNotFoundError | NotADirectoryError) and not os.path.isdir(
            self.path
        ):
            there = "it is not a directory" if os.path.exists(self.path) else None
            return StoreUnavailable(self.where, there or "there is no such directory")
        reason = error.strerror or type(error).__name__
        return StoreUnavailable(self.where, f"{doing} failed: {reason}")


def parse_s3_url(url: str) -> tuple[str, str]:
    """("bucket", "prefix") from "s3://bucket/prefix" (the prefix may be empty)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an S3 location like s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class S3Store:
    """Checkpoints as S3 objects under Object Lock (OPS_CHECKPOINT_S3)."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        client: Any = None,
    ) -> None:
        if isinstance(retention_days, bool) or not isinstance(retention_days, int):
            raise ValueError(f"the retention is a whole number of days, not {retention_days!r}")
        if retention_days < 1:
            raise ValueError(f"the retention must be at least one day, not {retention_days}")
        if endpoint_url is not None and not _is_http_url(endpoint_url):
            raise ValueError(f"the S3 endpoint {endpoint_url!r} is not an http(s) URL")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.where = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.retention_days = retention_days
        self._client = client
        self._lock_checked = False
        self._conditional_puts = True  # until the endpoint says it cannot do If-None-Match

    def put(self, size: int, note: bytes) -> None:
        self._keep(size, note_name(size), note, None)

    def put_extra(self, size: int, suffix: str, data: bytes) -> None:
        self._keep(size, extra_name(size, suffix), data, suffix)

    def get(self, size: int) -> bytes | None:
        return self._fetch(note_name(size))

    def get_extra(self, size: int, suffix: str) -> bytes | None:
        return self._fetch(extra_name(size, suffix))

    def sizes(self) -> list[int]:
        start = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, Delimiter="/"
            )
            for page in pages:
                names += [item["Key"][len(start) :] for item in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as error:
            raise self._unavailable("listing it", error) from None
        return _sizes_in(names)

    def latest(self) -> tuple[int, bytes] | None:
        for size in reversed(self.sizes()):
            note = self.get(size)
            if note is not None:
                return size, note
        return None

    @property
    def client(self) -> Any:
        """A boto3 S3 client, made on first use (credentials from boto3's chain)."""
        if self._client is None:
            session = boto3.session.Session()
            self._client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=session.region_name or DEFAULT_REGION,
                config=Config(
                    connect_timeout=5,
                    read_timeout=15,
                    retries={"max_attempts": 2, "mode": "standard"},  # the feed retries too
                    # MinIO and local servers have no per-bucket host names
                    s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                ),
            )
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _keep(self, size: int, name: str, data: bytes, suffix: str | None) -> None:
        self._check_object_lock()
        if _same_as_held(size, self._fetch(name), data, suffix):
            return
        try:
            self._put_new(name, data)
        except ClientError as error:
            if not _already_there(error):
                raise self._unavailable(f"putting {name}", error) from None
            # another writer got there between our look and our put: agree or object
            if not _same_as_held(size, self._fetch(name), data, suffix):
                raise self._unavailable(f"putting {name}", error) from None
        except BotoCoreError as error:
            raise self._unavailable(f"putting {name}", error) from None

    def _put_new(self, name: str, data: bytes) -> None:
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=self.retention_days)
        put: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(name),
            "Body": data,
            "ContentType": "text/plain; charset=utf-8" if name.endswith(".note") else None,
            "ChecksumAlgorithm": "SHA256",  # Object Lock wants a checksum with every put
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": until,
        }
        put = {key: value for key, value in put.items() if value is not None}
        if self._conditional_puts:
            try:
                self.client.put_object(**put, IfNoneMatch="*")
                return
            except ClientError as error:
                if _error_code(error) != "NotImplemented":
                    raise
                self._conditional_puts = False  # looked first; that check has to do
        self.client.put_object(**put)

    def _check_object_lock(self) -> None:
        """Once per store: a bucket without Object Lock would keep nothing unchangeable."""
        if self._lock_checked:
            return
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        except ClientError as error:
            if _error_code(error) != "ObjectLockConfigurationNotFoundError":
                raise self._unavailable("checking its Object Lock", error) from None
            enabled = None
        except BotoCoreError as error:
            raise self._unavailable("checking its Object Lock", error) from None
        if enabled != "Enabled":
            raise ObjectLockMissing(
                self.where,
                f"the bucket {self.bucket} does not have S3 Object Lock enabled, so a "
                "checkpoint put there could be deleted or replaced; enable Object Lock on it",
            )
        self._lock_checked = True

    def _fetch(self, name: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
            return answer["Body"].read()
        except ClientError as error:
            if _error_code(error) in ("NoSuchKey", "404"):
                return None
            raise self._unavailable(f"reading {name}", error) from None
        except BotoCoreError as error:
            raise self._unavailable(f"reading {name}", error) from None

    def _unavailable(self, doing: str, error: Exception) -> StoreUnavailable:
        return StoreUnavailable(self.where, f"{doing} failed: {self._why(error)}")

    def _why(self, error: Exception) -> str:
        """One line, from the error's kind and code only: never a key, a URL's secrets
        or a signature from the request."""
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return "no AWS credentials were found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
            return f"{self._endpoint()} could not be reached"
        if isinstance(error, ReadTimeoutError):
            return f"{self._endpoint()} did not answer in time"
        if isinstance(error, ClientError):
            code = _error_code(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return CLIENT_ERRORS.get(code, f"S3 answered {code or 'an error'} (HTTP {status})")
        return f"the S3 client failed ({type(error).__name__})"

    def _endpoint(self) -> str:
        if not self.endpoint_url:
            return "S3"
        parts = urlsplit(self.endpoint_url)
        return f"the S3 endpoint {parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


CLIENT_ERRORS = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied (the credentials lack a permission on the bucket)",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the AWS access key id was not recognised",
    "SignatureDoesNotMatch": "the AWS secret access key was refused",
    "ExpiredToken": "the AWS session token has expired",
    "InvalidToken": "the AWS session token was refused",
    "PermanentRedirect": "the bucket is in another region (set AWS_DEFAULT_REGION)",
    "AuthorizationHeaderMalformed": "the bucket is in another region (set AWS_DEFAULT_REGION)",
    "InvalidRequest": "S3 refused the request as invalid",
    "SlowDown": "S3 asked us to slow down",
    "ServiceUnavailable": "S3 is unavailable",
    "InternalError": "S3 had an internal error",
}


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _already_there(error: ClientError) -> bool:
    """S3's answers to If-None-Match when the key exists (409: a concurrent put)."""
    code = _error_code(error)
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or code in ("412", "409")
