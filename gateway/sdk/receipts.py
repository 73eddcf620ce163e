"""Checking a payment receipt offline: a JWS in compact form (RFC 7515), ``alg`` EdDSA
(Ed25519, RFC 8037), ``kid`` naming a key of the gateway's JWKS (``GET /v1/receipts/keys``).

A tool provider fetches the JWKS once (keys are only added: a rotated-out key stays listed,
so older receipts still verify) and then checks each ``X-IOU-Receipt`` without calling the
gateway. ``cryptography`` is imported only when a receipt is checked, so importing the SDK
still carries httpx and orjson alone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

ALG = "EdDSA"
CLAIMS = ("charge_id", "agent", "tool", "cost", "balance_after", "at", "task")


class ReceiptInvalid(ValueError):
    """The token is not a receipt signed by one of the keys (altered, forged, malformed)."""


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise ReceiptInvalid("not base64url") from None


def _json(part: str) -> dict[str, Any]:
    try:
        value = orjson.loads(b64url_decode(part))
    except orjson.JSONDecodeError:
        raise ReceiptInvalid("a part is not JSON") from None
    if not isinstance(value, dict):
        raise ReceiptInvalid("a part is not a JSON object")
    return value


def _public_key(jwks: Mapping[str, Any], kid: Any) -> bytes:
    for jwk in jwks.get("keys", []):
        if jwk.get("kid") == kid and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return b64url_decode(str(jwk.get("x", "")))
    raise ReceiptInvalid(f"no key {kid!r} in the gateway's JWKS")


def verify_receipt(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The receipt's claims when ``token`` is signed by a key of ``jwks``; raises
    ReceiptInvalid otherwise (any altered byte of header, claims or signature)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ReceiptInvalid("a receipt has three dot-separated parts")
    header = _json(parts[0])
    if header.get("alg") != ALG:
        raise ReceiptInvalid(f"alg must be {ALG}")
    try:
        key = Ed25519PublicKey.from_public_bytes(_public_key(jwks, header.get("kid")))
        key.verify(b64url_decode(parts[2]), f"{parts[0]}.{parts[1]}".encode("ascii"))
    except (InvalidSignature, ValueError) as exc:
        raise ReceiptInvalid("bad signature") from exc
    claims = _json(parts[1])
    missing = [c for c in CLAIMS if c not in claims]
    if missing:
        raise ReceiptInvalid(f"claims missing: {', '.join(missing)}")
    return claims
