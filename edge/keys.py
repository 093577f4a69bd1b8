"""The store's encryption key: where it comes from, and sealing data with it (AES-256-GCM).

The key is 32 random bytes from EDGE_VERIFY_KEY (64 hex digits) or EDGE_VERIFY_KEY_FILE (a file
of 32 bytes, raw, hex or base64, kept outside the store's folder). A Sealer encrypts and
authenticates data bound to "associated" bytes: 12-byte random nonce + ciphertext + tag.
"""
import base64
import binascii
import os
from pathlib import Path

from edge_verify.edge.errors import StoreError

KEY_ENV = "EDGE_VERIFY_KEY"             # the key as 64 hex digits
KEY_FILE_ENV = "EDGE_VERIFY_KEY_FILE"   # a file holding the 32 key bytes (raw, hex or base64)
KEY_SIZE = 32
NONCE_SIZE = 12
ENCRYPTION = "aes-256-gcm"              # what a store or an export says when a key is set


class Sealer:
    """AES-256-GCM with one key."""

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        if len(key) != KEY_SIZE:
            raise StoreError(f"the encryption key must be {KEY_SIZE} bytes, not {len(key)}")
        self._cipher = AESGCM(bytes(key))

    def seal(self, data: bytes, associated: bytes) -> bytes:
        """`data` encrypted and authenticated, bound to `associated`: nonce + ciphertext + tag."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._cipher.encrypt(nonce, data, associated)

    def unseal(self, blob: bytes, associated: bytes) -> bytes | None:
        """The data of a sealed `blob`, or None when it fails authentication (another key, another
        `associated`, or a changed byte)."""
        from cryptography.exceptions import InvalidTag
        if len(blob) < NONCE_SIZE:
            return None
        try:
            return self._cipher.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], associated)
        except InvalidTag:
            return None


def key_from_environment(store_path, environ=os.environ) -> bytes | None:
    """The encryption key from EDGE_VERIFY_KEY (hex) or EDGE_VERIFY_KEY_FILE, or None if neither is set.

    The key file holds 32 random bytes (raw, hex or base64) and must not lie in the store's
    folder: a key kept beside the data it protects protects nothing.
    """
    text, file = environ.get(KEY_ENV, "").strip(), environ.get(KEY_FILE_ENV, "").strip()
    if text and file:
        raise StoreError(f"set {KEY_ENV} or {KEY_FILE_ENV}, not both")
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != KEY_SIZE:
            raise StoreError(f"{KEY_ENV} must be {KEY_SIZE} bytes written as {2 * KEY_SIZE} hex digits")
        return key
    if not file:
        return None
    path = Path(file).expanduser().resolve()
    folder = Path(store_path).expanduser().resolve().parent
    if path.is_relative_to(folder):
        raise StoreError(f"the key file {path} is in the store's folder {folder}: keep the key "
                         "away from the database (another volume, or /run/keys)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StoreError(f"cannot read the key file {path}: {error.strerror or error}") from None
    return _parse_key(data, path)


def _parse_key(data: bytes, path) -> bytes:
    """32 raw bytes, or their hex or base64 text."""
    if len(data) == KEY_SIZE:
        return data
    text = data.strip()
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError, binascii.Error):
            continue
        if len(key) == KEY_SIZE:
            return key
    raise StoreError(f"the key file {path} must hold {KEY_SIZE} random bytes (raw, hex or base64), "
                     f"e.g. made with: head -c {KEY_SIZE} /dev/urandom > KEYFILE")
