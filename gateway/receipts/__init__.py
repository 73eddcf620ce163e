"""Signed receipts: proof of payment a tool provider can check offline.

A receipt is a JWS in compact form, ``alg`` EdDSA (Ed25519) and ``kid`` (the key's RFC 7638
thumbprint), over the claims ``{charge_id, agent, tool, cost, balance_after, at, task}``
(amounts as decimal strings, ``at`` in ISO 8601 UTC). ``at`` is the time in the charge id
(a UUIDv7 minted by the gateway just before the charge), so a charge's receipt says the same
whether it is signed on the answer or later from the ledger.

Keys: IOU_RECEIPT_KEY (seeds, the first signs) or ``<IOU_DATA_DIR>/receipt_key`` (0600,
generated at first start). ``GET /v1/receipts/keys`` publishes every public key, so receipts
signed before a rotation (the new seed put first, the old ones kept after it) still verify.
Signing costs ~40 µs of CPU, so charges sign only when asked (``X-IOU-Receipt: true``);
invoke and MCP calls always do (an upstream round trip dwarfs it).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.config import Settings, receipt_seeds
from gateway.metering.money import format_amount
from gateway.metering.secrets_store import ensure_secret
from gateway.sdk.receipts import (
    ALG,
    ReceiptInvalid,
    b64url_decode,
    b64url_encode,
    verify_receipt,
)

__all__ = ["ReceiptInvalid", "ReceiptSigner", "load_signer", "receipt_at", "sign_receipt",
           "verify_receipt"]

RECEIPT_KEY_FILE = "receipt_key"
HEX = frozenset("0123456789abcdef")
HEADER = "X-IOU-Receipt"  # asks for a receipt (charge, batch, capture); carries one upstream
log = logging.getLogger("iou.receipts")


def _thumbprint(x: str) -> str:
    """RFC 7638 JWK thumbprint of an Ed25519 public key (its required members, sorted)."""
    canonical = orjson.dumps({"crv": "Ed25519", "kty": "OKP", "x": x},
                             option=orjson.OPT_SORT_KEYS)
    return b64url_encode(hashlib.sha256(canonical).digest())


class ReceiptSigner:
    """Signs with the first key; publishes all of them."""

    def __init__(self, seeds: Sequence[str]) -> None:
        if not seeds:
            raise ValueError("at least one receipt key")
        self._keys = [Ed25519PrivateKey.from_private_bytes(b64url_decode(s)) for s in seeds]
        self._jwks = [self._jwk(k) for k in self._keys]
        self.kid = self._jwks[0]["kid"]
        header = orjson.dumps({"alg": ALG, "kid": self.kid, "typ": "JWT"})
        self._header = b64url_encode(header)

    @staticmethod
    def _jwk(key: Ed25519PrivateKey) -> dict[str, str]:
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = b64url_encode(raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": _thumbprint(x), "alg": ALG,
                "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k) for k in self._jwks]}

    def sign(self, claims: dict[str, Any]) -> str:
        payload = b64url_encode(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))
        signing_input = f"{self._header}.{payload}"
        signature = self._keys[0].sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"


def receipt_at(charge_id: str, fallback_ms: int | None = None) -> str:
    """ISO 8601 UTC (ms) of the time in a UUIDv7 charge id; ``fallback_ms`` (else now) for
    other ids (the gateway mints UUIDv7s: a charge is never refused a receipt for its id)."""
    digits = charge_id.rpartition("_")[2].replace("-", "")  # a hold id: "hold_" + hex
    timed = len(digits) == 32 and digits[12] == "7" and all(c in HEX for c in digits)
    ms = int(digits[:12], 16) if timed else fallback_ms
    if ms is None:
        ms = time.time_ns() // 1_000_000
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def sign_receipt(signer: ReceiptSigner, *, charge_id: str, agent: str, tool: str,  # noqa: PLR0913 - the claims, each named
                 cost_micros: int, balance_after_micros: int, task: str | None = None,
                 at_ms: int | None = None) -> str:
    """A signed receipt of one charge (or capture). ``at_ms`` only for ids that are not
    UUIDv7 (the time then comes from the ledger)."""
    return signer.sign({"charge_id": charge_id, "agent": agent, "tool": tool,
                        "cost": format_amount(cost_micros),
                        "balance_after": format_amount(balance_after_micros),
                        "at": receipt_at(charge_id, at_ms), "task": task})


def load_signer(settings: Settings) -> ReceiptSigner:
    """IOU_RECEIPT_KEY, else ``<IOU_DATA_DIR>/receipt_key`` (generated 0600 when missing;
    one line per key, the first signs)."""
    seeds = settings.receipt_keys
    if not seeds:
        text = ensure_secret(settings.data_dir, RECEIPT_KEY_FILE)
        seeds = receipt_seeds(text, str(settings.data_dir / RECEIPT_KEY_FILE))
        if not settings.uses_embedded_redis:
            log.warning("IOU_RECEIPT_KEY is not set: receipts are signed with %s; gateways "
                        "sharing a Redis should share one IOU_RECEIPT_KEY",
                        settings.data_dir / RECEIPT_KEY_FILE)
    return ReceiptSigner(seeds)
