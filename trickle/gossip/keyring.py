"""Gossip encryption: AES-GCM with a keyring of accepted keys, one of them primary.

No networking code. An encrypted packet (or TCP frame body) is

    version byte (ENCRYPTION_VERSION) | 12-byte random nonce | ciphertext | 16-byte tag

so it is wire.ENCRYPTION_OVERHEAD = 29 bytes longer than the plaintext. The version byte
is authenticated with the data. Keys are 16, 24 or 32 bytes (AES-128, -192, -256), given
to users as base64 (``trickle keygen`` prints one).

The primary key encrypts; every installed key is tried to decrypt, primary first, which
is how keys rotate without a partition (as serf's ``keys`` command):

    1. ``install(new)`` on every node   (all accept new; all still send with old)
    2. ``use(new)`` on every node       (all send with new; old is still accepted)
    3. ``remove(old)`` on every node    (old is refused from now on)

Errors: ``DecryptError`` for anything that does not decrypt (plaintext, truncated,
tampered, sealed with a key not installed: the receiver drops and counts it);
``ValidationError`` for a bad key (not bytes, not 16/24/32 bytes, not base64) or an
operation the keyring refuses (use a key not installed, remove the primary);
``KeyringError`` for encrypting with no key.

    TrickleError
    └── KeyringError (400)      encryption is not enabled: the keyring has no key
        └── DecryptError (400)  data that no installed key decrypts
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trickle.errors import TrickleError, ValidationError
from trickle.gossip.wire import ENCRYPTION_OVERHEAD

ENCRYPTION_VERSION = 1  # first byte of encrypted data (a plaintext packet starts with 0x92)
NONCE_BYTES = 12  # AES-GCM's standard nonce, random per message
TAG_BYTES = 16  # AES-GCM's authentication tag
KEY_SIZES = (16, 24, 32)  # bytes: AES-128, AES-192, AES-256
DEFAULT_KEY_SIZE = 32  # what `trickle keygen` prints (serf and Dkron use 32 too)

_HEADER = bytes([ENCRYPTION_VERSION])
assert 1 + NONCE_BYTES + TAG_BYTES == ENCRYPTION_OVERHEAD


class KeyringError(TrickleError):
    """The keyring cannot do this: encrypting with no key installed."""

    http_status = 400


class DecryptError(KeyringError):
    """Data that no installed key decrypts: plaintext, truncated, tampered or sealed with
    an unknown key. The message says which it looks like."""


# -- keys ------------------------------------------------------------------------------------------


def validate_key(key: bytes) -> bytes:
    """`key` as bytes if it is a valid AES key (16, 24 or 32 bytes); else ValidationError
    naming the problem."""
    if isinstance(key, str):
        raise ValidationError(
            "an encryption key must be bytes, not text: decode the base64 form first",
            field="encrypt",
        )
    if not isinstance(key, bytes | bytearray | memoryview):
        raise ValidationError(
            f"an encryption key must be bytes, not {type(key).__name__}", field="encrypt"
        )
    key = bytes(key)
    if len(key) not in KEY_SIZES:
        raise ValidationError(
            f"an encryption key must be 16, 24 or 32 bytes (AES-128, -192 or -256), "
            f"not {len(key)} bytes",
            field="encrypt",
        )
    return key


def generate_key(size: int = DEFAULT_KEY_SIZE) -> bytes:
    """A new random key of `size` bytes (16, 24 or 32) from the OS's secure generator."""
    if type(size) is not int or size not in KEY_SIZES:
        raise ValidationError(f"key size must be 16, 24 or 32 bytes, not {size!r}", field="size")
    return secrets.token_bytes(size)


def encode_key(key: bytes) -> str:
    """The standard base64 form of `key` (what users write in --encrypt and config)."""
    return base64.b64encode(validate_key(key)).decode("ascii")


def decode_key(text: str) -> bytes:
    """The key written as standard base64 in `text` (surrounding whitespace ignored).
    ValidationError if it is not base64, or does not decode to 16, 24 or 32 bytes."""
    if not isinstance(text, str):
        raise ValidationError(
            f"an encryption key must be base64 text, not {type(text).__name__}", field="encrypt"
        )
    stripped = text.strip()
    if not stripped:
        raise ValidationError("the encryption key is empty", field="encrypt")
    try:
        raw = base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValidationError(
            "the encryption key is not valid base64 (generate one with 'trickle keygen')",
            field="encrypt",
        ) from None
    if len(raw) not in KEY_SIZES:
        raise ValidationError(
            f"the encryption key must decode to 16, 24 or 32 bytes, not {len(raw)} bytes "
            "(generate one with 'trickle keygen')",
            field="encrypt",
        )
    return raw


def is_encrypted(data: bytes) -> bool:
    """True if `data` has the shape of encrypted data (version byte, long enough): how a
    node without a key tells an encrypted packet from a malformed one, to count it."""
    return len(data) >= ENCRYPTION_OVERHEAD and data[0] == ENCRYPTION_VERSION


# -- the keyring --------------------------------------------------------------------------------


class Keyring:
    """The keys a node accepts, and the primary one it encrypts with. Mutable at runtime
    (install, use, remove); an empty keyring is disabled (`enabled` is False: the node
    sends and accepts plaintext only, and encrypt/decrypt raise).

    `Keyring(keys, primary=...)`: the primary defaults to the first key and is installed
    if it is not among `keys`; duplicates are ignored. Every key is validated
    (ValidationError naming the size problem).
    """

    def __init__(self, keys: Sequence[bytes] = (), *, primary: bytes | None = None) -> None:
        if isinstance(keys, bytes | bytearray | str):
            raise ValidationError(
                "Keyring takes a sequence of keys, not one key: Keyring([key])", field="encrypt"
            )
        ordered = [validate_key(k) for k in keys]
        if primary is not None:
            ordered.insert(0, validate_key(primary))
        self._keys: tuple[bytes, ...] = tuple(dict.fromkeys(ordered))
        self._ciphers = {k: AESGCM(k) for k in self._keys}

    @classmethod
    def from_base64(cls, primary: str, *extra: str) -> Keyring:
        """A keyring whose primary is the base64 key `primary`, also accepting `extra`
        (ValidationError naming a key that is not valid base64 of 16, 24 or 32 bytes)."""
        return cls([decode_key(k) for k in extra], primary=decode_key(primary))

    def __repr__(self) -> str:  # never the keys themselves
        if not self._keys:
            return "Keyring(disabled)"
        return f"Keyring({len(self._keys)} keys, AES-{len(self._keys[0]) * 8} primary)"

    @property
    def enabled(self) -> bool:
        """True if the keyring has a key: packets are then encrypted, and plaintext is
        refused."""
        return bool(self._keys)

    @property
    def primary(self) -> bytes | None:
        """The key new data is encrypted with; None when disabled."""
        return self._keys[0] if self._keys else None

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every installed key, the primary first."""
        return self._keys

    # -- rotation --------------------------------------------------------------------------

    def install(self, key: bytes) -> None:
        """Accept `key` from now on (no change if installed). The first key installed in a
        disabled keyring becomes primary, which turns encryption on."""
        key = validate_key(key)
        if key not in self._ciphers:
            self._ciphers[key] = AESGCM(key)
            self._keys = (*self._keys, key)

    def use(self, key: bytes) -> None:
        """Encrypt with `key` from now on; it must be installed (ValidationError if not:
        install it on every node first)."""
        key = validate_key(key)
        if key not in self._ciphers:
            raise ValidationError(
                "cannot use a key that is not installed: install it (on every node) first",
                field="encrypt",
            )
        self._keys = (key, *(k for k in self._keys if k != key))

    def remove(self, key: bytes) -> bool:
        """Stop accepting `key`. The primary cannot be removed (ValidationError: use
        another key first). Returns False if `key` was not installed (nothing to do), so
        running the same rotation step twice is harmless."""
        key = validate_key(key)
        if key not in self._ciphers:
            return False
        if key == self._keys[0]:
            raise ValidationError(
                "cannot remove the primary key: use another key first", field="encrypt"
            )
        del self._ciphers[key]
        self._keys = tuple(k for k in self._keys if k != key)
        return True

    # -- sealing ---------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes) -> bytes:
        """`plaintext` sealed with the primary key under a fresh random nonce:
        ENCRYPTION_OVERHEAD bytes longer. KeyringError if the keyring is disabled."""
        if not self._keys:
            raise KeyringError("encryption is not enabled: the keyring has no key")
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self._keys[0]].encrypt(nonce, bytes(plaintext), _HEADER)
        return _HEADER + nonce + sealed

    def decrypt(self, data: bytes) -> bytes:
        """The plaintext of `data`, opened with the primary key or else any other installed
        key. DecryptError (and nothing else) for data that is not encrypted, truncated,
        tampered or sealed with a key that is not installed, or if the keyring is
        disabled."""
        if not self._keys:
            raise DecryptError("encryption is not enabled: the keyring has no key")
        data = bytes(data)
        if len(data) < ENCRYPTION_OVERHEAD:
            raise DecryptError(
                f"too short to be encrypted: {len(data)} bytes, the minimum is "
                f"{ENCRYPTION_OVERHEAD} (plaintext or truncated)"
            )
        if data[0] != ENCRYPTION_VERSION:
            raise DecryptError(
                f"not encrypted: the first byte is {data[0]:#04x}, not version "
                f"{ENCRYPTION_VERSION} (plaintext, or from a node without the key)"
            )
        nonce = data[1 : 1 + NONCE_BYTES]
        sealed = data[1 + NONCE_BYTES :]
        for key in self._keys:
            try:
                return self._ciphers[key].decrypt(nonce, sealed, _HEADER)
            except InvalidTag:
                continue
        raise DecryptError(
            f"no installed key decrypts it ({len(self._keys)} tried): sealed with another "
            "key, or tampered with"
        )
