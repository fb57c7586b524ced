"""RFC 3161 time-stamps of a checkpoint note: asking an authority for one, checking one.

A time-stamp is a Time-Stamp Authority's signed statement that SHA-256(note) existed at
its `gen_time`: a checkpoint kept with one cannot have been made up later. The witness
feed asks each authority of `OPS_TSA_URLS` and keeps the answer beside the note.

What is kept (`request_timestamp`'s result) is the whole DER TimeStampResp, the
`.tsr` file `openssl ts -reply` writes and `openssl ts -verify -in N.tsr -data N.note
-CAfile roots.pem` checks; it holds the token (the CMS SignedData) and its status.

Trust: `OPS_TSA_ROOTS` names a PEM bundle of the self-signed root certificates whose
time-stamp authorities we believe (`load_roots` reads it). There is no default: the
system's TLS roots vouch for web servers, not for clocks, and trusting them for time
would be a policy nobody chose. Intermediate certificates need not be in the bundle
when the authority sends its chain in the token (certReq is always set).

Every failure is a `TimestampError` whose message is one plain sentence.
"""

import datetime
import hashlib
import http.client
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimeStampRequest,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

SHA256 = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
MAX_ANSWER = 1 << 20  # a token is a few kB; more is not a time-stamp


class TimestampError(Exception):
    """A time-stamp could not be had, or does not check out."""


def request_timestamp(url: str, data: bytes, *, timeout: float = 10) -> bytes:
    """Ask the authority at `url` to time-stamp SHA-256(data); the DER TimeStampResp.

    Checked before it is returned: the status is granted, the token answers this very
    request (nonce, hash algorithm and hash) and carries the authority's certificate.
    Its signature is checked by `verify_timestamp`, against roots we chose."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise TimestampError(f"the time-stamp authority URL {url!r} is not http(s)")
    if not data:
        raise TimestampError("there is nothing to time-stamp (the note is empty)")
    request = (
        TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    answer = _post(url, request.as_bytes(), timeout)
    response = _decode(answer, f"the time-stamp authority {url} answered")
    _check_answers(response, request, data, url)
    return answer


def _post(url: str, body: bytes, timeout: float) -> bytes:
    post = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/timestamp-query",
            "Accept": "application/timestamp-reply",
        },
    )
    try:
        with urllib.request.urlopen(post, timeout=timeout) as answer:  # noqa: S310
            data = answer.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as error:
        raise TimestampError(
            f"the time-stamp authority {url} answered HTTP {error.code} {error.reason}"
        ) from None
    except urllib.error.URLError as error:
        raise TimestampError(
            f"the time-stamp authority {url} could not be reached: {_reason(error.reason)}"
        ) from None
    except (OSError, http.client.HTTPException) as error:
        raise TimestampError(
            f"the time-stamp authority {url} could not be reached: {_reason(error)}"
        ) from None
    if len(data) > MAX_ANSWER:
        raise TimestampError(f"the time-stamp authority {url} answered more than a time-stamp")
    return data


def _reason(error: object) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _decode(token: bytes, said: str) -> TimeStampResponse:
    try:
        return decode_timestamp_response(token)
    except ValueError:
        raise TimestampError(f"{said} something that is not an RFC 3161 time-stamp") from None


def _check_answers(
    response: TimeStampResponse, request: TimeStampRequest, data: bytes, url: str
) -> None:
    said = f"the time-stamp authority {url}"
    if response.status != PKIStatus.GRANTED:
        raise TimestampError(f"{said} did not grant a time-stamp ({_status(response)})")
    try:
        info = response.tst_info
    except ValueError:
        raise TimestampError(f"{said} granted a time-stamp but sent none") from None
    if info.nonce != request.nonce:
        raise TimestampError(f"{said} answered another request (the nonce differs)")
    imprint = info.message_imprint
    if imprint.hash_algorithm != SHA256 or imprint.message != hashlib.sha256(data).digest():
        raise TimestampError(f"{said} time-stamped other data than the note")
    if not response.signed_data.certificates:
        raise TimestampError(f"{said} sent no certificate although it was asked for one")


def _status(response: TimeStampResponse) -> str:
    """The refusal's status and the authority's text, on one line."""
    try:
        status = PKIStatus(response.status).name.lower()
    except ValueError:
        status = f"status {response.status}"
    text = " ".join(" ".join(response.status_string).split())[:200]
    return f"{status}: {text}" if text else status


def verify_timestamp(token: bytes, data: bytes, roots: list[x509.Certificate]) -> datetime.datetime:
    """When the authority says `data` existed (an aware UTC datetime), once its token
    is checked: granted, signed by a time-stamping certificate that chains to one of
    `roots` (valid at that time), and for exactly these bytes."""
    if not roots:
        raise TimestampError("no trusted time-stamp roots are configured (OPS_TSA_ROOTS)")
    response = _decode(token, "the kept time-stamp is")
    builder = VerifierBuilder()
    for root in roots:
        builder = builder.add_root_certificate(root)
    try:
        builder.build().verify_message(response, data)
    except VerificationError as error:
        raise TimestampError(f"the time-stamp does not check out: {_refusal(error)}") from None
    except ValueError as error:  # an unparsable certificate inside the token
        raise TimestampError(f"the time-stamp does not check out: {error}") from None
    return response.tst_info.gen_time


def _refusal(error: VerificationError) -> str:
    """The library's reason as a short sentence (its chain errors quote OpenSSL's stack)."""
    message = str(error)
    if message == "Mismatch between messages":
        return "it was issued for other data"
    if message.startswith("Error while verifying certificates"):
        return "its signature does not chain to a trusted root"
    if message == "PKIStatus is not GRANTED":
        return "the authority did not grant it"
    return message.splitlines()[0][:200] if message else type(error).__name__


def load_roots(path: str) -> list[x509.Certificate]:
    """The certificates of the PEM bundle at `path` (the value of OPS_TSA_ROOTS)."""
    try:
        with open(path, "rb") as bundle:
            pem = bundle.read()
    except OSError as error:
        raise TimestampError(
            f"the time-stamp roots {path} cannot be read: {_reason(error)}"
        ) from None
    try:
        roots = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TimestampError(f"the time-stamp roots {path} are not PEM certificates") from None
    return roots
