"""A small synchronous HTTP client of the gateway for the `iou` commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

TIMEOUT_S = 30.0


class ClientError(Exception):
    """The gateway refused (``code`` is the contract's error) or could not be reached."""

    def __init__(self, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.body = body or {}


@dataclass
class Client:
    url: str
    token: str | None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None, token: str | None = None,
                headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer of a 2xx; ClientError otherwise."""
        bearer = token or self.token
        sent = dict(headers or {})
        if bearer:
            sent["authorization"] = f"Bearer {bearer}"
        content = None
        if body is not None:
            content = orjson.dumps(body)
            sent["content-type"] = "application/json"
        try:
            response = httpx.request(method, self.url + path, content=content, params=params,
                                     headers=sent, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise ClientError("unreachable", f"cannot reach the gateway at {self.url} "
                              f"({type(exc).__name__}); is `iou serve` running?") from None
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
