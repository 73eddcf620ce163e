"""/mcp answers the HTTP-level refusals in the contract's JSON shape like every route: a POST
that is not application/json is 415 ``unsupported_media_type`` and a body above
IOU_BODY_BYTES_MAX is 413 ``body_too_large`` (declared or chunked); the MCP SDK answered them
with plain text ("Invalid Content-Type header", "Request body too large")."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.gateway_proc import Gateway
from tests.http_helpers import error_of, new_agent

LIST_TOOLS = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
BODY_BYTES_MAX = 65_536


def _post(gateway: Gateway, key: str, content: bytes | Iterator[bytes],
          content_type: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}",
               "accept": "application/json, text/event-stream"}
    if content_type is not None:
        headers["content-type"] = content_type
    return httpx.post(gateway.url + "/mcp", content=content, headers=headers, timeout=30)


def test_a_post_that_is_not_json_is_415_in_the_contract_shape(gateway: Gateway) -> None:
    _, key = new_agent(gateway, grant="1")
    for content_type in (None, "text/plain", "application/jsonx", "multipart/form-data"):
        response = _post(gateway, key, LIST_TOOLS, content_type)
        assert response.status_code == 415, (content_type, response.text)
        assert error_of(response) == "unsupported_media_type"
    assert _post(gateway, key, LIST_TOOLS, "application/json; charset=utf-8").status_code == 200


def test_a_body_too_large_is_413_in_the_contract_shape(gateway: Gateway) -> None:
    _, key = new_agent(gateway, grant="1")
    padded = LIST_TOOLS[:-1] + b',"params":{"x":"' + b"a" * BODY_BYTES_MAX + b'"}}'
    declared = _post(gateway, key, padded, "application/json")
    assert declared.status_code == 413 and error_of(declared) == "body_too_large"
    chunked = _post(gateway, key, iter([padded[:40_000], padded[40_000:]]), "application/json")
    assert chunked.status_code == 413 and error_of(chunked) == "body_too_large"
    assert _post(gateway, key, LIST_TOOLS, "application/json").status_code == 200
