"""Customer.io signing keys are sealed before they reach the log.

The gate needs the key itself (to recompute the HMAC), so a hash would not do;
keeping the key out of the log would make the log no longer the whole record of a
token. So the Token event holds the key encrypted (AES-GCM, the eventsourcing
library's AESCipher) under OPS_SECRET_KEY, which lives in configuration, never in
the store: a copy of the database alone does not reveal any signing key."""

import os
from base64 import b64decode, b64encode
from pathlib import Path

from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment

SEALED_PREFIX = "aesgcm:"


class SealingError(Exception):
    """No usable OPS_SECRET_KEY; the message says what to do."""


def new_secret_key() -> str:
    return AESCipher.create_key(32)


def embedded_secret_key(path: Path) -> str:
    """The embedded default (one SQLite file, one machine) keeps its key in a file
    beside the database, made on first use and readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(new_secret_key() + "\n")
    return path.read_text().strip()


class SigningKeys:
    def __init__(self, secret_key: str | None) -> None:
        self._cipher: AESCipher | None = None
        if secret_key:
            try:
                self._cipher = AESCipher(Environment(env={AESCipher.CIPHER_KEY: secret_key}))
            except ValueError:
                raise SealingError(
                    "OPS_SECRET_KEY must be 32 random bytes in base64, e.g. from "
                    "`python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'`"
                ) from None

    def seal(self, signing_key: str) -> str:
        ciphertext = self._required().encrypt(signing_key.encode())
        return SEALED_PREFIX + b64encode(ciphertext).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._required().decrypt(b64decode(sealed.removeprefix(SEALED_PREFIX))).decode()
        except ValueError:
            raise SealingError(
                "a signing key in the log cannot be opened with this OPS_SECRET_KEY "
                "(was it changed?)"
            ) from None

    def _required(self) -> AESCipher:
        if self._cipher is None:
            raise SealingError(
                "Customer.io signing keys are stored encrypted: set OPS_SECRET_KEY (32 random "
                "bytes in base64) on every pm-ops process"
            )
        return self._cipher
