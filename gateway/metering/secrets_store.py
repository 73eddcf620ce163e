"""Secrets: the ones generated on first start of the embedded default (kept 0600 under
IOU_DATA_DIR), and the encryption at rest of upstream credentials.

Upstream credentials (a tool's ``upstream_headers``) are sealed with AES-256-GCM before the
tool_set script sees them, so Redis, its AOF, the event stream, the ledger and ``iou recover``
only ever hold ciphertext; the proxy opens them just before forwarding. The AES key is
derived with HKDF-SHA256 from IOU_SECRET_KEY (at least 32 characters of random text) or, on
the embedded default, from ``<IOU_DATA_DIR>/secret_key``. The tool's name is the associated
data, so a sealed value copied onto another tool does not open. Sealed form:
``enc:v1:<key id>:<base64url(nonce || ciphertext || tag)>``; the key id (8 hex of an HMAC of
the key) names the key that sealed it, so a wrong key is reported as such.

Rotation (by hand, for now): set the new IOU_SECRET_KEY and PUT each tool with upstream
headers again; a tool sealed under the old key answers 503 on invoke until then.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.metering.errors import InvalidRequest, Unavailable
from gateway.metering.models import SecretSettings as Settings

log = logging.getLogger("iou.secrets")

SECRET_KEY_FILE = "secret_key"
SEALED_PREFIX = "enc:v1:"
NONCE_BYTES = 12  # AES-GCM's standard nonce; random per sealing (2^-32 collision at 2^32)
HKDF_INFO = b"iou-gateway upstream credentials v1"


def ensure_secret(data_dir: Path, name: str, prefix: str = "") -> str:
    """Read ``data_dir/name``, creating it (mode 0600, never overwritten) when missing.

    Written to a private temporary file and then linked into place, so a concurrent
    reader (another worker starting) sees either no file or the whole value."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    value = prefix + secrets.token_urlsafe(32)
    temporary = data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text().strip()  # another process won the race: use its value
    finally:
        temporary.unlink()
    return value


class CredentialsUnreadable(Unavailable):
    """Stored credentials that this gateway cannot open (no key, or another key)."""


class SecretBox:
    """AES-256-GCM with a key derived from one secret; seals short values."""

    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=HKDF_INFO).derive(secret.encode())
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, b"key id", hashlib.sha256).hexdigest()[:8]

    def seal(self, plaintext: bytes, context: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, context)
        return f"{SEALED_PREFIX}{self.key_id}:" + _b64(sealed)

    def open(self, sealed: str, context: bytes) -> bytes:
        """The plaintext; raises ValueError when it is not ours or was altered."""
        key_id, _, payload = sealed.removeprefix(SEALED_PREFIX).partition(":")
        if key_id != self.key_id:
            raise ValueError("sealed with another IOU_SECRET_KEY")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context)
        except (InvalidTag, binascii.Error, ValueError):
            raise ValueError("altered, or sealed for another tool") from None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def secret_key(settings: Settings) -> str | None:
    """IOU_SECRET_KEY, or on the embedded default the generated ``secret_key`` file."""
    if settings.secret_key is not None:
        return settings.secret_key
    if settings.uses_embedded_redis:
        return ensure_secret(settings.data_dir, SECRET_KEY_FILE)
    return None


def check_at_start(settings: Settings) -> None:
    """Create the embedded default's key now (not at the first PUT), or say in the log that
    upstream credentials will be refused."""
    if secret_key(settings) is None:
        log.warning("IOU_SECRET_KEY is not set: tools with upstream_headers will be refused "
                    "(they are stored encrypted with it)")


@functools.lru_cache(maxsize=8)
def _box(secret: str) -> SecretBox:
    return SecretBox(secret)


def box_for(settings: Settings) -> SecretBox | None:
    secret = secret_key(settings)
    return None if secret is None else _box(secret)


def _context(kind: str, name: str) -> bytes:
    return f"iou:{kind}:{name}".encode()


def seal_headers(settings: Settings, name: str, headers: Mapping[str, str] | None,
                 kind: str = "tool", field: str = "upstream_headers") -> str:
    """The stored form of the headers of a tool (or of another ``kind`` of upstream, e.g.
    an MCP server, whose request ``field`` held them): '' for none, else sealed JSON."""
    if not headers:
        return ""
    box = box_for(settings)
    if box is None:
        raise InvalidRequest(field, "cannot be stored: the gateway has no IOU_SECRET_KEY to "
                             "encrypt them with")
    return box.seal(orjson.dumps(dict(headers)), _context(kind, name))


def open_headers(settings: Settings, name: str, stored: str | None, kind: str = "tool"
                 ) -> dict[str, str]:
    """The headers from their stored form (sealed; or plain JSON written before encryption
    existed, accepted until the tool is PUT again)."""
    if not stored:
        return {}
    if not stored.startswith(SEALED_PREFIX):
        return dict(orjson.loads(stored))
    box = box_for(settings)
    if box is None:
        raise CredentialsUnreadable(f"The upstream credentials of {name} are encrypted and "
                                    "this gateway has no IOU_SECRET_KEY; nothing was charged.")
    try:
        return dict(orjson.loads(box.open(stored, _context(kind, name))))
    except ValueError as exc:
        log.error("upstream credentials of %s %s cannot be opened: %s", kind, name, exc)
        raise CredentialsUnreadable(f"The upstream credentials of {name} cannot be decrypted "
                                    "with this gateway's IOU_SECRET_KEY; nothing was "
                                    "charged.") from None
