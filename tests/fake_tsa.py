"""A local fake RFC 3161 Time-Stamp Authority, for the time-stamp tests.

`FakeTSA().start()` serves POST / on 127.0.0.1 at a random port: it parses the
TimeStampReq (asn1crypto) and answers a granted TimeStampResp whose token is a CMS
SignedData over a TSTInfo, signed by a TSA certificate (critical extendedKeyUsage
timeStamping) that a self-signed root issued, both made anew for each fake with
`cryptography`. The signed attributes are content-type, message-digest and
signing-certificate-v2, as real authorities send them.

Planned faults for the next requests: "500" (an error page), "drop" (connection
closed unanswered), "rejection" (status rejection), "wrong_nonce" and "wrong_imprint"
(a granted token that answers another request). `stop()` makes it go away.
"""

import datetime
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from asn1crypto import algos, cms, core, tsp, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fake_http import FakeServer, JSONHandler

POLICY = "1.3.6.1.4.1.55738.666.1"  # any policy OID: the verifier is told none


@dataclass(frozen=True)
class Authority:
    """A root CA and the TSA certificate it issued, with the TSA's private key."""

    root: cx509.Certificate
    certificate: cx509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> cx509.Name:
    return cx509.Name(
        [
            cx509.NameAttribute(NameOID.ORGANIZATION_NAME, "pm-ops tests"),
            cx509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_authority(label: str = "Fake TSA") -> Authority:
    """A fresh root and TSA certificate, valid from yesterday for a year."""
    now = datetime.datetime.now(datetime.UTC)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_name, tsa_name = _name(f"{label} Root"), _name(label)

    def builder(subject: cx509.Name, key: rsa.RSAPrivateKey) -> cx509.CertificateBuilder:
        return (
            cx509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(cx509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(
                cx509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )

    root = (
        builder(root_name, root_key)
        .add_extension(cx509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    certificate = (
        builder(tsa_name, tsa_key)
        .add_extension(cx509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            cx509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    return Authority(root=root, certificate=certificate, key=tsa_key)


def _key_usage(*, cert_sign: bool) -> cx509.KeyUsage:
    return cx509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def time_stamp_response(
    authority: Authority, request: tsp.TimeStampReq, serial: int, now: datetime.datetime
) -> tsp.TimeStampResp:
    """The granted answer to `request`: a token signed by the authority's TSA key."""
    tst_info = tsp.TSTInfo(
        {
            "version": "v1",
            "policy": POLICY,
            "message_imprint": request["message_imprint"],
            "serial_number": serial,
            "gen_time": now,
            "accuracy": {"seconds": 1},
            "nonce": request["nonce"].native,
        }
    )
    tsa_cert = x509.Certificate.load(authority.certificate.public_bytes(serialization.Encoding.DER))
    signed_attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "message_digest", "values": [hashlib.sha256(tst_info.dump()).digest()]},
            {
                "type": "signing_certificate_v2",
                "values": [{"certs": [_ess_cert_id(tsa_cert)]}],
            },
        ]
    )
    signature = authority.key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": tsa_cert.issuer,
                        "serial_number": tsa_cert.serial_number,
                    }
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
            "signature": signature,
        }
    )
    wants_certificate = bool(request["cert_req"].native)
    signed_data = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {"content_type": "tst_info", "content": tst_info},
            "certificates": [tsa_cert] if wants_certificate else [],
            "signer_infos": [signer],
        }
    )
    return tsp.TimeStampResp(
        {
            "status": {"status": "granted"},
            "time_stamp_token": {"content_type": "signed_data", "content": signed_data},
        }
    )


def _ess_cert_id(certificate: x509.Certificate) -> tsp.ESSCertIDv2:
    return tsp.ESSCertIDv2(
        {
            "hash_algorithm": {"algorithm": "sha256"},
            "cert_hash": hashlib.sha256(certificate.dump()).digest(),
            "issuer_serial": {
                "issuer": [x509.GeneralName({"directory_name": certificate.issuer})],
                "serial_number": certificate.serial_number,
            },
        }
    )


def _rejection() -> bytes:
    """A TimeStampResp with no token (asn1crypto's schema wants one, so built by hand)."""
    status = tsp.PKIStatusInfo(
        {"status": "rejection", "status_string": ["policy not accepted"]}
    ).dump()
    assert len(status) < 128  # one length byte
    return b"\x30" + bytes([len(status)]) + status


def _answering_another(request: tsp.TimeStampReq, fault: str) -> tsp.TimeStampReq:
    """The same request with another nonce or another hash: what a confused TSA signs."""
    other = tsp.TimeStampReq.load(request.dump())
    if fault == "wrong_nonce":
        other["nonce"] = core.Integer(secrets.randbits(63))
    else:
        other["message_imprint"] = {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": secrets.token_bytes(32),
        }
    return other


@dataclass
class FakeTSA:
    authority: Authority = field(default_factory=make_authority)
    faults: list[str] = field(default_factory=list)
    requests: list[tsp.TimeStampReq] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: FakeServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> "FakeTSA":
        fake = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    return self.answer(415, {"error": "expected application/timestamp-query"})
                fake._stamp(self, tsp.TimeStampReq.load(body))

            def reply(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = FakeServer(("127.0.0.1", 0), Handler)
        poll = 0.05  # stop() waits for the next poll: keep going away quick
        threading.Thread(target=self.server.serve_forever, args=(poll,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away: the port closes, later requests are refused."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def _stamp(self, handler: Any, request: tsp.TimeStampReq) -> None:
        with self.lock:
            self.requests.append(request)
            serial = len(self.requests)
            fault = self.faults.pop(0) if self.faults else None
        if fault == "500":
            return handler.answer(500, {"error": "internal error"})
        if fault == "drop":
            return handler.drop()
        if fault == "rejection":
            return handler.reply(_rejection())
        if fault in ("wrong_nonce", "wrong_imprint"):
            request = _answering_another(request, fault)
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        handler.reply(time_stamp_response(self.authority, request, serial, now).dump())
