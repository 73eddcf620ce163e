"""A small synchronous HTTP client of the gateway for the `iou` commands.

Every POST carries an Idempotency-Key (the caller's, else one generated per request), so a
request whose answer was lost (connection reset, timeout, 503) is sent again with the same
key and the gateway answers the first result instead of acting twice. The other methods
the CLI uses (GET, PUT, PATCH) are idempotent by themselves and are retried the same way.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

TIMEOUT_S = 30.0
RETRIES_MAX = 2
BACKOFF_S = 0.25  # doubled on each retry, plus up to as much jitter
IDEMPOTENCY_HEADER = "idempotency-key"


class ClientError(Exception):
    """The gateway refused (``code`` is the contract's error) or could not be reached."""

    def __init__(self, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.body = body or {}


def new_idempotency_key() -> str:
    return "iou-cli-" + secrets.token_urlsafe(18)


@dataclass
class Client:
    url: str
    token: str | None
    retries_max: int = RETRIES_MAX
    backoff_s: float = BACKOFF_S

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None, token: str | None = None,
                headers: dict[str, str] | None = None,
                idempotency_key: str | None = None) -> Any:
        """The decoded JSON answer of a 2xx; ClientError otherwise."""
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        bearer = token or self.token
        if bearer:
            sent["authorization"] = f"Bearer {bearer}"
        if method == "POST":
            sent[IDEMPOTENCY_HEADER] = (idempotency_key or sent.get(IDEMPOTENCY_HEADER)
                                        or new_idempotency_key())
        content = None
        if body is not None:
            content = orjson.dumps(body)
            sent["content-type"] = "application/json"
        response = self._send(method, path, content, params, sent)
        if response.status_code == 204:
            return None
        try:
            payload = response.json()
        except ValueError:
            raise ClientError("bad_response", f"{self.url}{path} answered "
                              f"{response.status_code} without JSON") from None
        if response.status_code >= 400:
            raise ClientError(payload.get("error", "error"), payload.get("message", ""),
                              payload)
        return payload

    def _send(self, method: str, path: str, content: bytes | None,
              params: dict[str, str] | None, headers: dict[str, str]) -> httpx.Response:
        """One request, sent again (same headers, so the same Idempotency-Key) when its
        answer was lost or the gateway was briefly unavailable."""
        for attempt in range(self.retries_max + 1):
            last = attempt == self.retries_max
            try:
                response = httpx.request(method, self.url + path, content=content,
                                         params=params, headers=headers, timeout=TIMEOUT_S)
            except httpx.TransportError as exc:
                if not last:
                    self._pause(attempt)
                    continue
                raise ClientError("unreachable", f"cannot reach the gateway at {self.url} "
                                  f"({type(exc).__name__}); is `iou serve` running?") from None
            except httpx.HTTPError as exc:
                raise ClientError("unreachable", f"cannot talk to the gateway at {self.url} "
                                  f"({type(exc).__name__})") from None
            if response.status_code == 503 and not last:
                self._pause(attempt)
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, attempt: int) -> None:
        delay_s = self.backoff_s * 2 ** attempt
        time.sleep(delay_s + random.uniform(0, delay_s))
