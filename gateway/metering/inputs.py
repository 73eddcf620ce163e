"""Checks and encodings of the domain's inputs, shared by every concern: idempotency keys
(and the keys derived from them), request hashes, metadata, amounts, hold ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.metering import money
from gateway.metering.errors import InvalidRequest, NotFound
from gateway.store.calls import Idempotency

IDEMPOTENCY_KEY_CHARS_MAX = 128
FINGERPRINT_CHARS_MAX = 128
METADATA_BYTES_MAX = 2048
HOLD_ID_RE = re.compile(r"hold_[0-9a-f]{32}", re.ASCII)
TASK_ID_RE = re.compile(r"task_[0-9a-f]{32}", re.ASCII)
# A caller's key is printable ASCII, so it never holds this character: a derived key (the
# caller's key, this separator, a part name) can never equal a key a caller chose.
DERIVED_KEY_SEPARATOR = "\u00b7"
DERIVED_PART_RE = re.compile(r"[a-z0-9_]{1,32}", re.ASCII)


class InvariantBroken(AssertionError):
    """The domain was given what the API validates (a caller's bug, not a client's error):
    answered as the contract's 500, never as a refusal naming a field."""


def require(condition: bool, what: str) -> None:
    """Assert an invariant of the domain's inputs (TigerBeetle's style: checked on every
    call, whatever python -O says)."""
    if not condition:
        raise InvariantBroken(what)


def check_idempotency_key(key: str | None) -> None:
    """The API checked the key against its pattern (gateway/api/requests.py); here it is an
    invariant: a derived key's separator must never occur in a caller's key."""
    require(key is None or (key.isascii() and key.isprintable()
                            and 1 <= len(key) <= IDEMPOTENCY_KEY_CHARS_MAX),
            "an Idempotency-Key is 1 to 128 printable ASCII characters")


def derived_key(key: str | None, part: str | None) -> str | None:
    """The idempotency key of one part of a keyed request (a batch item, an invoke's
    capture), after checking the caller's ``key``; ``key`` itself when ``part`` is None."""
    check_idempotency_key(key)
    if key is None or part is None:
        return key
    if not DERIVED_PART_RE.fullmatch(part):
        raise ValueError(f"bad idempotency part {part!r}")
    return f"{key}{DERIVED_KEY_SEPARATOR}{part}"


def idempotency(key: str | None, *inputs: object) -> Idempotency | None:
    """A keyed call's idempotency: the key and a hash of the operation's ``inputs`` (a
    retry must carry the same ones to be replayed); None without a key."""
    if not key:
        return None
    return Idempotency(key, hashlib.sha256(orjson.dumps(inputs)).hexdigest()[:48])


def metadata_text(metadata: Mapping[str, Any] | None) -> str:
    """Metadata as the JSON text the scripts pass to the ledger unchanged ('' = none)."""
    if metadata is None:
        return ""
    if not isinstance(metadata, Mapping):
        raise InvalidRequest("metadata", "must be a JSON object")
    text = orjson.dumps(metadata).decode()
    if len(text.encode()) > METADATA_BYTES_MAX:
        raise InvalidRequest("metadata", f"must be at most {METADATA_BYTES_MAX} bytes")
    return text


def check_fingerprint(fingerprint: Any, field: str = "fingerprint") -> str | None:
    """A call's ``fingerprint`` (its arguments for the loop breaker): any string of at most
    128 characters, or None."""
    if fingerprint is not None and (not isinstance(fingerprint, str)
                                    or len(fingerprint) > FINGERPRINT_CHARS_MAX):
        raise InvalidRequest(field, f"must be a string of at most {FINGERPRINT_CHARS_MAX} "
                                    "characters")
    return fingerprint


def fp(fingerprint: str | None) -> tuple[str, ...]:
    """A fingerprint among a call's idempotency inputs: nothing when absent, so the hash of
    a call without one is what it was before fingerprints existed."""
    return () if fingerprint is None else ("fingerprint", fingerprint)


def loop_digest(tool: str, fingerprint: str | None, metadata: Mapping[str, Any] | None,
                body: bytes | None = None) -> str:
    """What the loop breaker compares: the tool and the call's arguments, which are its
    ``fingerprint`` when given, else its metadata (canonical JSON: keys sorted), else the
    invoke's ``body``; hashed here to 32 hex characters, so the script's key stays short
    whatever the arguments. A tag byte keeps a fingerprint from equalling a metadata text."""
    h = hashlib.blake2b(tool.encode(), digest_size=16)
    if fingerprint is not None:
        h.update(b"\0f" + fingerprint.encode("utf-8", "surrogatepass"))
    elif metadata is not None:
        h.update(b"\0m" + orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS))
    elif body is not None:
        h.update(b"\0b" + body)
    return h.hexdigest()


def given_amount(field: str, micros: int | None, low: int, amount_max_micros: int
                 ) -> int | None:
    """A client's optional amount after its range check (``low`` to the maximum)."""
    if micros is None:
        return None
    if not money.is_whole(micros, low, amount_max_micros):
        bounds = "above 0 and at most" if low else "between 0 and"
        raise InvalidRequest(field, f"must be an amount {bounds} IOU_AMOUNT_MAX")
    return micros


def hold_ref(hold_id: str) -> str:
    """A hold id as the scripts name it; any other text is no hold (404)."""
    if not isinstance(hold_id, str) or not HOLD_ID_RE.fullmatch(hold_id):
        raise NotFound("No such hold.")
    return hold_id


def task_ref(task_id: str | None) -> str | None:
    """A task id as the scripts name it (None: the call names no task); any other text is
    no task (404), as is another agent's task (its key is another one)."""
    if task_id is None:
        return None
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        raise NotFound("No such task.")
    return task_id
