"""Encryption at rest for secrets (sensitive variables, runner tokens and TLS keys,
notification URLs and signing secrets).

Owns the Fernet key handling: parsing ``ENCRYPTION_KEY`` (one key, or several separated by
commas for rotation: the first encrypts, all decrypt) and the start-up check that refuses to
run when encrypted data exists but no key, or the wrong key, is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import Invalid
from backend.models import NotificationDestination, RetiredSecret, Runner, Variable

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

# `cryptography` (~7 MB resident) is imported only where a key is parsed or generated: a
# backend without ENCRYPTION_KEY never loads it.

KEY_HINT = "generate one with ./generate-encryption-key.sh"


class MalformedKey(ValueError):
    """ENCRYPTION_KEY is set but is not a valid Fernet key (list)."""


class EncryptionUnavailable(Invalid):
    """A secret must be stored but no ENCRYPTION_KEY is configured."""


class DecryptionFailed(Exception):
    """Stored ciphertext does not decrypt with the configured key(s)."""


def parse_key(raw: str) -> MultiFernet:
    """Build the cipher from ENCRYPTION_KEY; raise MalformedKey with a one-line reason."""
    from cryptography.fernet import Fernet, MultiFernet

    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise MalformedKey(f"ENCRYPTION_KEY is empty; {KEY_HINT}")
    fernets = []
    for i, part in enumerate(parts, start=1):
        try:
            fernets.append(Fernet(part.encode()))
        except ValueError:
            which = "ENCRYPTION_KEY" if len(parts) == 1 else f"key {i} of ENCRYPTION_KEY"
            raise MalformedKey(
                f"{which} is malformed: a Fernet key is 32 url-safe base64-encoded bytes "
                f"(44 characters); {KEY_HINT}"
            ) from None
    return MultiFernet(fernets)


def generate_key() -> str:
    """A new random Fernet key."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


# How every Fernet token starts (version byte 0x80, base64): a state (JSON) or a plan
# file (zip) stored before a key was configured never does.
FERNET_PREFIX = b"gAAAAA"


class Cipher:
    """Encrypts and decrypts secrets; usable without a key until a secret must be stored."""

    def __init__(self, key: str | None) -> None:
        self._fernet = parse_key(key) if key else None

    @property
    def available(self) -> bool:
        return self._fernet is not None

    def encrypt(self, plaintext: str | bytes, what: str = "a sensitive value") -> bytes:
        if self._fernet is None:
            raise EncryptionUnavailable(
                f"storing {what} needs ENCRYPTION_KEY to be set on the backend; {KEY_HINT}"
            )
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        return self._fernet.encrypt(data)

    def seal(self, data: bytes) -> bytes:
        """Terraform's own files (state, saved plans) hold every secret of a run in
        plaintext: stored encrypted when a key is configured, else as they are."""
        if not data or self._fernet is None:
            return data
        return self._fernet.encrypt(data)

    def unseal(self, data: bytes) -> bytes:
        """What `seal` stored (a file stored before a key was set comes back as is)."""
        if not data.startswith(FERNET_PREFIX):
            return data
        if self._fernet is None:
            raise DecryptionFailed(f"ENCRYPTION_KEY is not set; {KEY_HINT}")
        from cryptography.fernet import InvalidToken  # loaded with the key

        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise DecryptionFailed(
                "a stored state or plan file does not decrypt with ENCRYPTION_KEY (wrong key?)"
            ) from None

    def decrypt(self, ciphertext: bytes) -> str:
        if self._fernet is None:
            raise DecryptionFailed(f"ENCRYPTION_KEY is not set; {KEY_HINT}")
        from cryptography.fernet import InvalidToken  # loaded with the key

        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise DecryptionFailed(
                "stored secrets do not decrypt with ENCRYPTION_KEY (wrong key?); set the key "
                "they were encrypted with"
            ) from None


class SecretsUnreadable(Exception):
    """Encrypted data exists that the configured key cannot read; the backend must not start."""


async def check_encryption(session: AsyncSession, cipher: Cipher) -> None:
    """Refuse to start when secrets are stored but no key, or the wrong key, is configured.

    One sample per table is enough to catch a missing or swapped key; the check stays cheap
    however many secrets there are.
    """
    samples: list[tuple[str, bytes]] = []
    for column in (Variable.value_encrypted, RetiredSecret.value_encrypted):
        variable = await session.scalar(select(column).where(column.is_not(None)).limit(1))
        if variable is not None:
            samples.append(("sensitive variables", variable))
    for column in (Runner.token_encrypted, Runner.tls_key_encrypted):
        value = await session.scalar(select(column).where(column.is_not(None)).limit(1))
        if value is not None:
            samples.append(("runner credentials", value))
    destination = await session.scalar(select(NotificationDestination.url_encrypted).limit(1))
    if destination is not None:
        samples.append(("notification destinations", destination))
    if not samples:
        return
    what = samples[0][0]
    if not cipher.available:
        raise SecretsUnreadable(
            f"the database holds encrypted {what} but ENCRYPTION_KEY is not set; set the key "
            f"they were encrypted with ({KEY_HINT} only for a new installation)"
        )
    for what, ciphertext in samples:
        try:
            cipher.decrypt(ciphertext)
        except DecryptionFailed:
            raise SecretsUnreadable(
                f"ENCRYPTION_KEY does not decrypt the stored {what}; set the key they were "
                f"encrypted with (to rotate, list the new key first: NEW,OLD; {KEY_HINT})"
            ) from None
