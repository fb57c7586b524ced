"""A local S3 (moto in server mode) for the tests of the S3 witness store.

`s3_endpoint` starts moto's ThreadedMotoServer on 127.0.0.1 at a free port, once per
test module; `s3` gives each test dummy credentials (in its environment only) and a
fresh bucket with Object Lock enabled, and can make more buckets. A test module uses
them with `from tests.s3_server import s3_endpoint_fixture, s3_fixture  # noqa: F401`.

What moto 5.2.6 enforces of Object Lock, tried by hand against this server:
- enforced: deleting a version under COMPLIANCE retention (DeleteObject with its
  VersionId, with or without BypassGovernanceRetention, and in DeleteObjects) is
  refused with AccessDenied; a put with Object Lock headers into a bucket without
  Object Lock is refused (InvalidRequest); If-None-Match: * on an existing key is
  refused (412 PreconditionFailed); a bucket holding objects cannot be deleted.
- as on AWS: a put without If-None-Match over a locked key is accepted and makes a new
  version (Object Lock guards versions, not names: our store must look first and send
  If-None-Match); a delete without VersionId only adds a delete marker, and the locked
  version stays readable by its id.
- NOT enforced (AWS refuses these): shortening a COMPLIANCE retain-until date or
  turning COMPLIANCE into GOVERNANCE with PutObjectRetention; suspending versioning
  on an Object Lock bucket. Lifecycle rules are accepted and never run.
- missing: GetObjectRetention answers 500 (moto has no handler for it); HeadObject and
  GetObject do return ObjectLockMode and ObjectLockRetainUntilDate, so tests read those.
"""

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer


@dataclass
class S3:
    endpoint_url: str
    bucket: str  # made with Object Lock enabled
    client: Any  # a boto3 S3 client on the endpoint, for looking behind the store's back

    def make_bucket(self, *, object_lock: bool) -> str:
        name = f"checkpoints-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name


@pytest.fixture(name="s3_endpoint", scope="module")
def s3_endpoint_fixture() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket listens
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="s3")
def s3_fixture(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> S3:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    s3 = S3(endpoint_url=s3_endpoint, bucket="", client=client)
    s3.bucket = s3.make_bucket(object_lock=True)
    return s3
