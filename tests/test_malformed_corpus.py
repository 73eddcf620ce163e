"""The malformed-input corpus, over raw sockets: every answer is the contract's JSON error
with the status and code written next to the case, never a 500, and nothing is charged,
held, funded or created (the victim's state, the agents, the tools and the ledger are the
same after each case).

Placeholders in the raw requests: @KEY@ (the victim's agent key), @ADMIN@ (the admin
token), @AGENT@ (the victim's name), @HOLD@ (an open hold of the victim).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.raw_http import RawResponse, connect, read_response
from tests.servers import redis_server

TIMEOUT_S = 1  # the corpus gateway's head and body timeouts (slow cases end after it)
J = "application/json"


def req(  # noqa: PLR0913 - the parts of one raw request
        method: str, path: str, body: bytes = b"", *, who: str = "agent", ctype: str | None = J,
        headers: bytes = b"", length: bool = True) -> bytes:
    """A raw HTTP/1.1 request; ``headers`` are extra raw header lines (each ending CRLF)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"host: 127.0.0.1"]
    if who == "agent":
        lines.append(b"authorization: Bearer @KEY@")
    elif who == "admin":
        lines.append(b"authorization: Bearer @ADMIN@")
    if ctype is not None:
        lines.append(b"content-type: " + ctype.encode())
    if length:
        lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n" + headers + b"\r\n" + body


def charge(body: bytes, **kw: Any) -> bytes:
    return req("POST", "/v1/charge", body, **kw)


def batch(body: bytes) -> bytes:
    return req("POST", "/v1/charges", body)


def hold(body: bytes) -> bytes:
    return req("POST", "/v1/holds", body)


def capture(body: bytes) -> bytes:
    return req("POST", "/v1/holds/@HOLD@/capture", body)


def fund(body: bytes) -> bytes:
    return req("POST", "/v1/agents/@AGENT@/fund", body, who="admin")


def agents(body: bytes) -> bytes:
    return req("POST", "/v1/agents", body, who="admin")


def limits(body: bytes) -> bytes:
    return req("PATCH", "/v1/agents/@AGENT@/limits", body, who="admin")


def tool(body: bytes, name: str = "corpus_tool") -> bytes:
    return req("PUT", f"/v1/tools/{name}", body, who="admin")


def chunked(path: str, chunks: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer @KEY@\r\n"
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            ).encode() + chunks


GET_OK = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n"
DEEP = 20_000
HUGE_DIGITS = b"9" * 5000

# Sending modes: "send" (all at once, then read), "half-close" (send, shut our side, read;
# the answer may be none at all), "stall" (send, then wait: the gateway's timeout answers).
# (name, mode, raw request, expected status or None for "closed without an answer",
#  expected error code)
Case = tuple[str, str, bytes, int | None, str | None]
CASES: list[Case] = [
    # --- request line ---
    ("unknown method", "send", b"FOO /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("lowercase method", "send", b"get /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("method with NUL", "send", b"G\x00T /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("HTTP/0.9 request line", "send", b"GET /healthz\r\n\r\n", 505,
     "http_version_not_supported"),
    ("HTTP/2.0 as text", "send", b"GET /v1/balance HTTP/2.0\r\nhost: x\r\n\r\n", 401,
     "unauthorized"),  # answered as HTTP/1.1
    ("HTTP/1.2", "send", b"GET /healthz HTTP/1.2\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),  # refused by the parser itself
    ("HTTP/9.9", "send", b"GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),  # refused by the parser itself
    ("version garbage", "send", b"GET /healthz HTTX/1.1\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("space in URL", "send", b"GET /a b HTTP/1.1\r\nhost: x\r\n\r\n", 400, "malformed_request"),
    ("NUL in URL", "send", b"GET /a\x00b HTTP/1.1\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("non-ASCII URL", "send", b"GET /\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("100 kB URL", "send", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 414,
     "uri_too_long"),
    ("URL one byte over 8 KiB", "send", b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nhost: x\r\n\r\n",
     414, "uri_too_long"),
    ("URL of exactly 8 KiB is served", "send",
     b"GET /" + b"a" * 8191 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 404, "not_found"),
    ("100 kB query string", "send",
     b"GET /v1/balance?" + b"a=1&" * 25_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 414,
     "uri_too_long"),
    ("TLS ClientHello", "send", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
     400, "malformed_request"),
    ("binary garbage", "send", bytes(range(256)), 400, "malformed_request"),
    ("bare LF line ends", "send", b"GET /healthz HTTP/1.1\nhost: x\n\n", 400,
     "malformed_request"),
    ("CR without LF in request line", "send", b"GET /healthz HTTP/1.1\rhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("CONNECT tunnel", "send", b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nhost: x\r\n\r\n", 400,
     "malformed_request"),
    ("unknown path", "send", GET_OK + b"\r\n", None, None),  # replaced below: a 404 probe
    ("wrong method on a route", "send", req("DELETE", "/v1/charge"), 405,
     "method_not_allowed"),
    ("PATCH on charge", "send", req("PATCH", "/v1/charge", b"{}"), 405, "method_not_allowed"),
    ("GET on holds", "send", req("GET", "/v1/holds"), 405, "method_not_allowed"),
    ("percent-encoded NUL in agent", "send", req("GET", "/v1/agents/%00", who="admin"), 422,
     "invalid_request"),
    # --- headers ---
    ("NUL in a header value", "send", GET_OK + b"x-a: a\x00b\r\n\r\n", 400,
     "malformed_request"),
    ("CR in a header value", "send", GET_OK + b"x-a: a\rb\r\n\r\n", 400, "malformed_request"),
    ("header injection via LF", "send", GET_OK + b"x-a: a\nx-b: injected\r\n\r\n", 400,
     "malformed_request"),
    ("header without colon", "send", GET_OK + b"just-a-name\r\n\r\n", 400,
     "malformed_request"),
    ("space in header name", "send", GET_OK + b"x a: 1\r\n\r\n", 400, "malformed_request"),
    ("space before colon", "send", GET_OK + b"x-a : 1\r\n\r\n", 400, "malformed_request"),
    ("empty header name", "send", GET_OK + b": value\r\n\r\n", 400, "malformed_request"),
    ("non-ASCII header name", "send", GET_OK + b"x-\xe9: 1\r\n\r\n", 400, "malformed_request"),
    ("obsolete line folding", "send", GET_OK + b"x-a: 1\r\n  folded\r\n\r\n", 400,
     "malformed_request"),
    ("500 headers", "send", GET_OK + b"".join(b"x-%d: 1\r\n" % i for i in range(500)) + b"\r\n",
     431, "headers_too_large"),
    ("one 40 kB header", "send", GET_OK + b"x-big: " + b"a" * 40_000 + b"\r\n\r\n", 431,
     "headers_too_large"),
    ("20 kB of cookies", "send", GET_OK + b"cookie: a=" + b"b" * 2000 + b"\r\n" * 1
     + b"".join(b"cookie: c%d=" % i + b"d" * 2000 + b"\r\n" for i in range(10)) + b"\r\n", 431,
     "headers_too_large"),
    ("1 MB head", "send", GET_OK + b"x-big: " + b"a" * 1_000_000, 431, "headers_too_large"),
    # --- Content-Length and Transfer-Encoding ---
    ("Content-Length letters", "send",
     charge(b'{"tool": "web_search"}', length=False, headers=b"content-length: abc\r\n"), 400,
     "malformed_request"),
    ("Content-Length negative", "send",
     charge(b'{"tool": "web_search"}', length=False, headers=b"content-length: -22\r\n"), 400,
     "malformed_request"),
    ("Content-Length doubled, different", "send",
     charge(b'{"tool": "web_search"}', headers=b"content-length: 5\r\n"), 400,
     "malformed_request"),
    ("Content-Length doubled, same", "send",
     charge(b'{"tool": "web_search"}', headers=b"content-length: 22\r\n"), 400,
     "malformed_request"),
    ("Content-Length list", "send",
     charge(b'{"tool": "web_search"}', length=False, headers=b"content-length: 22, 22\r\n"),
     400, "malformed_request"),
    ("Content-Length overflowing 64 bits", "send",
     charge(b"", length=False, headers=b"content-length: 99999999999999999999999\r\n"), 400,
     "malformed_request"),
    ("Content-Length hex", "send",
     charge(b'{"tool": "web_search"}', length=False, headers=b"content-length: 0x16\r\n"), 400,
     "malformed_request"),
    ("Content-Length plus sign", "send",
     charge(b'{"tool": "web_search"}', length=False, headers=b"content-length: +22\r\n"), 400,
     "malformed_request"),
    ("Content-Length above the body limit", "send",
     charge(b"", length=False, headers=b"content-length: 70000\r\n"), 413, "body_too_large"),
    ("Content-Length and chunked", "send",
     charge(b"0\r\n\r\n", headers=b"transfer-encoding: chunked\r\n"), 400, "malformed_request"),
    ("Transfer-Encoding gzip", "send",
     charge(b"", length=False, headers=b"transfer-encoding: gzip\r\n"), 400,
     "malformed_request"),
    ("Transfer-Encoding chunked twice", "send",
     charge(b"0\r\n\r\n", length=False,
            headers=b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n"),
     400, "malformed_request"),
    ("chunk size not hex", "send", chunked("/v1/charge", b"zz\r\n{}\r\n0\r\n\r\n"), 400,
     "malformed_request"),
    ("chunk size overflowing", "send",
     chunked("/v1/charge", b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"), 400,
     "malformed_request"),
    ("chunk without CRLF", "send", chunked("/v1/charge", b"2\r\n{}XX0\r\n\r\n"), 400,
     "malformed_request"),
    ("chunked body over the limit", "send",
     chunked("/v1/charge", b"".join(b"1000\r\n" + b" " * 4096 + b"\r\n" for _ in range(20))
             + b"0\r\n\r\n"), 413, "body_too_large"),
    # --- truncated and slow requests ---
    ("body shorter than Content-Length, half-closed", "half-close",
     charge(b'{"tool": "web_search"}', length=False, headers=b"content-length: 71\r\n"), None,
     None),
    ("batch body truncated, half-closed", "half-close",
     batch(b'{"charges": [{"tool": "web_search"}]}')[:-3], None, None),
    ("chunked body without its last chunk, half-closed", "half-close",
     chunked("/v1/charge", b'16\r\n{"tool": "web_search"}\r\n'), None, None),
    ("body shorter than Content-Length, stalled", "stall",
     charge(b'{"tool": "web_search"}', length=False, headers=b"content-length: 71\r\n"), 408,
     "request_timeout"),
    ("chunked body stalled before its end", "stall",
     chunked("/v1/charge", b'16\r\n{"tool": "web_search"}\r\n'), 408, "request_timeout"),
    ("head stalled mid-header", "stall", b"POST /v1/charge HTTP/1.1\r\nhost: 127.0.0.1\r\nauth",
     408, "request_timeout"),
    ("request line stalled", "stall", b"POST /v1/cha", 408, "request_timeout"),
    # --- authentication (few: failures are counted per client) ---
    ("no Authorization", "send", charge(b'{"tool": "web_search"}', who="none"), 401,
     "unauthorized"),
    ("Basic scheme", "send",
     charge(b'{"tool": "web_search"}', who="none", headers=b"authorization: Basic YTpi\r\n"),
     401, "unauthorized"),
    ("agent key on an admin route", "send", req("POST", "/v1/agents/@AGENT@/fund",
                                                b'{"amount": "1"}'), 403, "forbidden"),
    ("Latin-1 bytes in the bearer token", "send",
     charge(b'{"tool": "web_search"}', who="none",
            headers=b"authorization: Bearer iou_\xe9\xe9\xe9\r\n"), 401, "unauthorized"),
    # --- Idempotency-Key ---
    ("Idempotency-Key empty", "send",
     charge(b'{"tool": "web_search"}', headers=b"idempotency-key: \r\n"), 422,
     "invalid_request"),
    ("Idempotency-Key 129 chars", "send",
     charge(b'{"tool": "web_search"}', headers=b"idempotency-key: " + b"k" * 129 + b"\r\n"),
     422, "invalid_request"),
    ("Idempotency-Key Latin-1", "send",
     charge(b'{"tool": "web_search"}', headers=b"idempotency-key: caf\xe9\r\n"), 422,
     "invalid_request"),
    ("Idempotency-Key with a tab", "send",
     charge(b'{"tool": "web_search"}', headers=b"idempotency-key: a\tb\r\n"), 422,
     "invalid_request"),
    ("Idempotency-Key with DEL", "send",
     charge(b'{"tool": "web_search"}', headers=b"idempotency-key: a\x7fb\r\n"), 400,
     "malformed_request"),  # refused by the parser itself
    ("Idempotency-Key on fund, too long", "send",
     req("POST", "/v1/agents/@AGENT@/fund", b'{"amount": "1"}', who="admin",
         headers=b"idempotency-key: " + b"k" * 200 + b"\r\n"), 422, "invalid_request"),
    ("Idempotency-Key on a batch, Latin-1", "send",
     req("POST", "/v1/charges", b'{"charges": [{"tool": "web_search"}]}',
         headers=b"idempotency-key: \xff\r\n"), 422, "invalid_request"),
    # --- media type ---
    ("text/plain", "send", charge(b'{"tool": "web_search"}', ctype="text/plain"), 415,
     "unsupported_media_type"),
    ("no Content-Type", "send", charge(b'{"tool": "web_search"}', ctype=None), 415,
     "unsupported_media_type"),
    ("application/jsonx", "send", charge(b'{"tool": "web_search"}', ctype="application/jsonx"),
     415, "unsupported_media_type"),
    ("form encoded", "send",
     charge(b"tool=web_search", ctype="application/x-www-form-urlencoded"), 415,
     "unsupported_media_type"),
    ("multipart", "send", charge(b"--b\r\n\r\n--b--", ctype="multipart/form-data; boundary=b"),
     415, "unsupported_media_type"),
    # --- bad JSON of every sort (fast path) ---
    ("empty body", "send", charge(b""), 400, "malformed_json"),
    ("whitespace body", "send", charge(b"   \n"), 400, "malformed_json"),
    ("null body", "send", charge(b"null"), 400, "malformed_json"),
    ("array body", "send", charge(b'[{"tool": "web_search"}]'), 400, "malformed_json"),
    ("number body", "send", charge(b"42"), 400, "malformed_json"),
    ("string body", "send", charge(b'"web_search"'), 400, "malformed_json"),
    ("true body", "send", charge(b"true"), 400, "malformed_json"),
    ("trailing garbage", "send", charge(b'{"tool": "web_search"}x'), 400, "malformed_json"),
    ("two objects", "send", charge(b'{"tool": "web_search"}{"tool": "calc"}'), 400,
     "malformed_json"),
    ("trailing comma", "send", charge(b'{"tool": "web_search",}'), 400, "malformed_json"),
    ("single quotes", "send", charge(b"{'tool': 'web_search'}"), 400, "malformed_json"),
    ("comment", "send", charge(b'{"tool": "web_search" /* x */}'), 400, "malformed_json"),
    ("unquoted key", "send", charge(b'{tool: "web_search"}'), 400, "malformed_json"),
    ("NaN value", "send", charge(b'{"tool": "web_search", "cost": NaN}'), 400,
     "malformed_json"),
    ("-Infinity value", "send", charge(b'{"tool": "web_search", "cost": -Infinity}'), 400,
     "malformed_json"),
    ("UTF-8 BOM", "send", charge(b'\xef\xbb\xbf{"tool": "web_search"}'), 400, "malformed_json"),
    ("UTF-16 body", "send", charge('{"tool": "web_search"}'.encode("utf-16")), 400,
     "malformed_json"),
    ("invalid UTF-8", "send", charge(b'{"tool": "web\xffsearch"}'), 400, "malformed_json"),
    ("overlong UTF-8 slash", "send", charge(b'{"tool": "web\xc0\xafsearch"}'), 400,
     "malformed_json"),
    ("surrogate encoded as raw UTF-8", "send", charge(b'{"tool": "\xed\xa0\x80"}'), 400,
     "malformed_json"),
    ("unterminated string", "send", charge(b'{"tool": "web_search}'), 400, "malformed_json"),
    ("raw control char in a string", "send", charge(b'{"tool": "web\x01search"}'), 400,
     "malformed_json"),
    ("bad escape", "send", charge(b'{"tool": "web\\qsearch"}'), 400, "malformed_json"),
    ("short unicode escape", "send", charge(b'{"tool": "\\u12"}'), 400, "malformed_json"),
    ("duplicate keys", "send", charge(b'{"tool": "calc", "tool": "web_search"}'), 400,
     "malformed_json"),
    ("duplicate keys, compact", "send", charge(b'{"tool":"calc","tool":"web_search"}'), 400,
     "malformed_json"),
    ("duplicate keys in metadata", "send",
     charge(b'{"tool": "web_search", "metadata": {"a": 1, "a": 2}}'), 400, "malformed_json"),
    ("duplicate keys differing by escape", "send",
     charge(b'{"tool": "calc", "t\\u006fol": "web_search"}'), 400, "malformed_json"),
    ("body nested 20,000 deep", "send", charge(b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
     422, "invalid_request"),
    ("object nested 5,000 deep", "send",
     charge(b'{"metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"), 422,
     "invalid_request"),
    # --- charge fields ---
    ("tool missing", "send", charge(b"{}"), 422, "invalid_request"),
    ("tool number", "send", charge(b'{"tool": 5}'), 422, "invalid_request"),
    ("tool null", "send", charge(b'{"tool": null}'), 422, "invalid_request"),
    ("tool boolean", "send", charge(b'{"tool": true}'), 422, "invalid_request"),
    ("tool array", "send", charge(b'{"tool": ["web_search"]}'), 422, "invalid_request"),
    ("tool object", "send", charge(b'{"tool": {"name": "web_search"}}'), 422,
     "invalid_request"),
    ("tool empty", "send", charge(b'{"tool": ""}'), 422, "invalid_request"),
    ("tool 65 chars", "send", charge(b'{"tool": "' + b"a" * 65 + b'"}'), 422,
     "invalid_request"),
    ("tool 60 kB", "send", charge(b'{"tool": "' + b"a" * 60_000 + b'"}'), 422,
     "invalid_request"),
    ("tool uppercase", "send", charge(b'{"tool": "Web_Search"}'), 422, "invalid_request"),
    ("tool with NUL", "send", charge(b'{"tool": "web_search\\u0000"}'), 422,
     "invalid_request"),
    ("tool lone surrogate", "send", charge(b'{"tool": "\\ud800"}'), 422, "invalid_request"),
    ("tool Cyrillic homoglyph", "send", charge('{"tool": "wеb_search"}'.encode()), 422,
     "invalid_request"),
    ("tool zero-width space", "send", charge('{"tool": "web\u200b_search"}'.encode()), 422,
     "invalid_request"),
    ("tool fullwidth letters", "send", charge('{"tool": "ｗｅｂ"}'.encode()), 422,
     "invalid_request"),
    ("tool RTL override", "send", charge('{"tool": "\u202ehcraes_bew"}'.encode()), 422,
     "invalid_request"),
    ("tool trailing newline", "send", charge(b'{"tool": "web_search\\n"}'), 422,
     "invalid_request"),
    ("tool unknown", "send", charge(b'{"tool": "no_such_tool"}'), 404, "not_found"),
    ("unknown field", "send", charge(b'{"tool": "web_search", "price": "0"}'), 422,
     "invalid_request"),
    ("unknown field with a surrogate name", "send",
     charge(b'{"tool": "web_search", "\\ud800": 1}'), 422, "invalid_request"),
    ("idempotency_key field on a single charge", "send",
     charge(b'{"tool": "web_search", "idempotency_key": "k"}'), 422, "invalid_request"),
    ("cost on a fixed-price tool", "send", charge(b'{"tool": "web_search", "cost": "0.01"}'),
     422, "invalid_request"),
    ("variable tool without cost", "send", charge(b'{"tool": "llm_summarize"}'), 422,
     "invalid_request"),
    # --- amounts of every contract-listed kind (variable cost) ---
    *[(f"cost {label}", "send",
       charge(b'{"tool": "llm_summarize", "cost": ' + value + b"}"), 422, "invalid_request")
      for label, value in [
          ("negative", b'"-0.01"'), ("negative number", b"-1"), ("NaN string", b'"NaN"'),
          ("Infinity string", b'"Infinity"'), ("exponent string", b'"1e-2"'),
          ("exponent number", b"1e-2"), ("7 decimals", b'"0.0000001"'),
          ("7 decimals number", b"0.0000001"), ("separator", b'"1,000"'),
          ("underscore", b'"1_000"'), ("Arabic-Indic digits", '"١"'.encode()),
          ("fullwidth digits", '"１"'.encode()), ("boolean", b"true"), ("null", b"null"),
          ("array", b'["1"]'), ("object", b'{"v": "1"}'), ("empty", b'""'),
          ("above the maximum", b'"1000000001"'), ("5000 digits", b'"' + HUGE_DIGITS + b'"'),
          ("5000 digits number", HUGE_DIGITS), ("leading plus", b'"+1"'),
          ("leading space", b'" 1"'), ("trailing dot", b'"1."'), ("leading dot", b'".5"'),
          ("hex", b'"0x10"'), ("leading zero", b'"01"')]],
    # --- metadata ---
    *[(f"metadata {label}", "send",
       charge(b'{"tool": "web_search", "metadata": ' + value + b"}"), 422, "invalid_request")
      for label, value in [
          ("array", b"[1]"), ("string", b'"x"'), ("number", b"5"), ("boolean", b"true"),
          ("NUL in a value", b'{"n": "a\\u0000b"}'), ("NUL in a key", b'{"a\\u0000": 1}'),
          ("lone surrogate", b'{"s": "\\ud800"}'), ("surrogate key", b'{"\\udfff": 1}'),
          ("integer above 64 bits", b'{"n": 18446744073709551616}'),
          ("integer of 5000 digits", b'{"n": ' + HUGE_DIGITS + b"}"),
          ("float overflowing", b'{"x": 1e400}'), ("float underflowing", b'{"x": 1e-400}'),
          ("above 2 KiB", b'{"x": "' + b"m" * 3000 + b'"}'),
          ("nested 40 deep", b'{"m": ' + b"[" * 40 + b"]" * 40 + b"}")]],
    # --- batches ---
    ("batch charges missing", "send", batch(b"{}"), 422, "invalid_request"),
    ("batch charges null", "send", batch(b'{"charges": null}'), 422, "invalid_request"),
    ("batch charges object", "send", batch(b'{"charges": {"tool": "web_search"}}'), 422,
     "invalid_request"),
    ("batch charges string", "send", batch(b'{"charges": "web_search"}'), 422,
     "invalid_request"),
    ("batch empty", "send", batch(b'{"charges": []}'), 422, "invalid_request"),
    ("batch of 1001", "send", batch(b'{"charges": [' + b",".join([b'{"tool": "web_search"}']
                                                                  * 1001) + b"]}"), 422,
     "invalid_request"),
    ("batch unknown top-level field", "send", batch(b'{"charges": [], "x": 1}'), 422,
     "invalid_request"),
    ("batch invalid JSON", "send", batch(b'{"charges": [}'), 400, "malformed_json"),
    # A malformed item refuses the whole batch (nothing charged), as any malformed body.
    ("batch item not an object", "send", batch(b'{"charges": [1, "x", null, []]}'), 422,
     "invalid_request"),
    ("batch item wrong tool types", "send",
     batch(b'{"charges": [{"tool": 5}, {"tool": null}, {"tool": "Bad"}]}'), 422,
     "invalid_request"),
    ("batch item unknown field", "send", batch(b'{"charges": [{"tool": "web_search", "x": 1}]}'),
     422, "invalid_request"),
    ("batch item NUL metadata", "send",
     batch(b'{"charges": [{"tool": "web_search", "metadata": {"n": "\\u0000"}}]}'), 422,
     "invalid_request"),
    ("batch item surrogate metadata", "send",
     batch(b'{"charges": [{"tool": "web_search", "metadata": {"n": "\\ud800"}}]}'), 422,
     "invalid_request"),
    ("batch item big-integer metadata", "send",
     batch(b'{"charges": [{"tool": "web_search", "metadata": {"n": 1' + b"0" * 30 + b"}}]}"),
     422, "invalid_request"),
    ("batch item idempotency_key wrong type", "send",
     batch(b'{"charges": [{"tool": "web_search", "idempotency_key": 5}]}'), 422,
     "invalid_request"),
    ("batch item idempotency_key surrogate", "send",
     batch(b'{"charges": [{"tool": "web_search", "idempotency_key": "\\ud800"}]}'), 422,
     "invalid_request"),
    ("batch item idempotency_key 129 chars", "send",
     batch(b'{"charges": [{"tool": "web_search", "idempotency_key": "' + b"k" * 129 + b'"}]}'),
     422, "invalid_request"),
    ("batch item bad cost", "send",
     batch(b'{"charges": [{"tool": "llm_summarize", "cost": "-1"}]}'), 422,
     "invalid_request"),
    # --- holds ---
    ("hold tool missing", "send", hold(b'{"max_cost": "1"}'), 422, "invalid_request"),
    ("hold max_cost negative", "send", hold(b'{"tool": "llm_summarize", "max_cost": "-1"}'),
     422, "invalid_request"),
    ("hold max_cost zero", "send", hold(b'{"tool": "llm_summarize", "max_cost": "0"}'), 422,
     "invalid_request"),
    ("hold max_cost boolean", "send", hold(b'{"tool": "llm_summarize", "max_cost": false}'),
     422, "invalid_request"),
    *[(f"hold ttl_s {label}", "send",
       hold(b'{"tool": "llm_summarize", "max_cost": "1", "ttl_s": ' + value + b"}"), 422,
       "invalid_request")
      for label, value in [
          ("string", b'"300"'), ("zero", b"0"), ("above 3600", b"3601"), ("negative", b"-1"),
          ("fraction", b"1.5"), ("exponent", b"1e2"), ("boolean", b"true"), ("array", b"[5]"),
          ("5000 digits", HUGE_DIGITS), ("above 64 bits", b"18446744073709551616")]],
    ("hold metadata surrogate", "send",
     hold(b'{"tool": "llm_summarize", "max_cost": "1", "metadata": {"s": "\\ud800"}}'), 422,
     "invalid_request"),
    ("hold metadata NUL", "send",
     hold(b'{"tool": "llm_summarize", "max_cost": "1", "metadata": {"s": "\\u0000"}}'), 422,
     "invalid_request"),
    ("hold unknown field", "send", hold(b'{"tool": "llm_summarize", "max_cost": "1", "x": 1}'),
     422, "invalid_request"),
    # --- capture and release ---
    ("capture cost missing", "send", capture(b"{}"), 422, "invalid_request"),
    ("capture cost negative", "send", capture(b'{"cost": "-1"}'), 422, "invalid_request"),
    ("capture cost exponent", "send", capture(b'{"cost": 1e-1}'), 422, "invalid_request"),
    ("capture cost above the hold", "send", capture(b'{"cost": "2"}'), 422, "invalid_request"),
    ("capture metadata surrogate", "send",
     capture(b'{"cost": "0.1", "metadata": {"s": "\\udc00"}}'), 422, "invalid_request"),
    ("capture metadata big integer", "send",
     capture(b'{"cost": "0.1", "metadata": {"n": -9223372036854775809}}'), 422,
     "invalid_request"),
    ("capture unknown hold", "send",
     req("POST", "/v1/holds/no-such-hold/capture", b'{"cost": "0.1"}'), 404, "not_found"),
    ("capture 5 kB hold id", "send",
     req("POST", "/v1/holds/" + "h" * 5000 + "/capture", b'{"cost": "0.1"}'), 404,
     "not_found"),
    ("release unknown field", "send", req("POST", "/v1/holds/@HOLD@/release", b'{"x": 1}'), 422,
     "invalid_request"),
    ("release invalid JSON", "send", req("POST", "/v1/holds/@HOLD@/release", b"{"), 400,
     "malformed_json"),
    # --- fund (admin): amounts of every contract-listed kind ---
    *[(f"fund amount {label}", "send", fund(b'{"amount": ' + value + b"}"), 422,
       "invalid_request")
      for label, value in [
          ("negative", b'"-1"'), ("zero", b'"0"'), ("NaN", b'"NaN"'), ("Infinity", b'"inf"'),
          ("exponent", b'"1e3"'), ("exponent number", b"1E3"), ("7 decimals", b'"1.0000001"'),
          ("separator", b'"1 000"'), ("Devanagari digits", '"१"'.encode()),
          ("boolean", b"false"), ("above the maximum", b'"1000000000.000001"'),
          ("missing", b"null"), ("5000 digits", b'"' + HUGE_DIGITS + b'"')]],
    ("fund metadata surrogate", "send", fund(b'{"amount": "1", "metadata": {"s": "\\ud800"}}'),
     422, "invalid_request"),
    ("fund metadata 5000-digit integer", "send",
     fund(b'{"amount": "1", "metadata": {"n": ' + HUGE_DIGITS + b"}}"), 422, "invalid_request"),
    ("fund unknown agent", "send",
     req("POST", "/v1/agents/no-such-agent-x/fund", b'{"amount": "1"}', who="admin"), 404,
     "not_found"),
    ("fund agent name uppercase", "send",
     req("POST", "/v1/agents/Victim/fund", b'{"amount": "1"}', who="admin"), 422,
     "invalid_request"),
    # --- agents (admin) ---
    *[(f"agent name {label}", "send", agents(b'{"name": ' + value + b"}"), 422,
       "invalid_request")
      for label, value in [
          ("missing", b"null"), ("number", b"5"), ("empty", b'""'), ("65 chars", b'"' + b"a" * 65
                                                                        + b'"'),
          ("uppercase", b'"Bob"'), ("space", b'"a b"'), ("slash", b'"a/b"'),
          ("NUL", b'"a\\u0000"'), ("surrogate", b'"\\ud800"'), ("ligature", '"ﬁle"'.encode()),
          ("dotless i", '"ıd"'.encode()), ("array", b'["a"]')]],
    ("agent grant negative", "send", agents(b'{"name": "corpus-new", "grant": "-5"}'), 422,
     "invalid_request"),
    ("agent grant exponent", "send", agents(b'{"name": "corpus-new", "grant": 1e3}'), 422,
     "invalid_request"),
    ("agent unknown field", "send", agents(b'{"name": "corpus-new", "admin": true}'), 422,
     "invalid_request"),
    # --- limits (admin) ---
    ("limits per_call text", "send", limits(b'{"per_call": "abc"}'), 422, "invalid_request"),
    ("limits daily zero", "send", limits(b'{"daily": "0"}'), 422, "invalid_request"),
    ("limits low_balance negative", "send", limits(b'{"low_balance": "-1"}'), 422,
     "invalid_request"),
    ("limits categories array", "send", limits(b'{"categories": []}'), 422, "invalid_request"),
    ("limits category value string", "send", limits(b'{"categories": {"llm": "1"}}'), 422,
     "invalid_request"),
    ("limits category name bad", "send", limits(b'{"categories": {"LLM!": {"daily": "1"}}}'),
     422, "invalid_request"),
    ("limits category name surrogate", "send",
     limits(b'{"categories": {"\\ud800": {"daily": "1"}}}'), 422, "invalid_request"),
    ("limits category unknown cap", "send",
     limits(b'{"categories": {"llm": {"yearly": "1"}}}'), 422, "invalid_request"),
    ("limits webhook scheme", "send", limits(b'{"webhook_url": "file:///etc/passwd"}'), 422,
     "invalid_request"),
    ("limits webhook control char", "send",
     limits(b'{"webhook_url": "https://x/\\u0001"}'), 422, "invalid_request"),
    ("limits webhook 3000 chars", "send",
     limits(b'{"webhook_url": "https://x/' + b"a" * 3000 + b'"}'), 422, "invalid_request"),
    ("limits webhook number", "send", limits(b'{"webhook_url": 5}'), 422, "invalid_request"),
    ("limits unknown field", "send", limits(b'{"yearly": "1"}'), 422, "invalid_request"),
    # --- tools (admin) ---
    ("tool price missing", "send", tool(b'{"category": "tool"}'), 422, "invalid_request"),
    ("tool price negative", "send", tool(b'{"price": "-1", "category": "tool"}'), 422,
     "invalid_request"),
    ("tool category missing", "send", tool(b'{"price": "1"}'), 422, "invalid_request"),
    ("tool category uppercase", "send", tool(b'{"price": "1", "category": "LLM"}'), 422,
     "invalid_request"),
    ("tool pricing unknown", "send",
     tool(b'{"price": "1", "category": "tool", "pricing": "free"}'), 422, "invalid_request"),
    ("tool upstream scheme", "send",
     tool(b'{"price": "1", "category": "tool", "upstream": "gopher://x"}'), 422,
     "invalid_request"),
    ("tool upstream_headers array", "send",
     tool(b'{"price": "1", "category": "tool", "upstream_headers": ["a"]}'), 422,
     "invalid_request"),
    ("tool upstream header name bad", "send",
     tool(b'{"price": "1", "category": "tool", "upstream_headers": {"a b": "1"}}'), 422,
     "invalid_request"),
    ("tool upstream header value CRLF", "send",
     tool(b'{"price": "1", "category": "tool", "upstream_headers": {"x": "a\\r\\nb: c"}}'),
     422, "invalid_request"),
    ("tool upstream header value surrogate", "send",
     tool(b'{"price": "1", "category": "tool", "upstream_headers": {"x": "\\ud800"}}'), 422,
     "invalid_request"),
    ("tool name in path uppercase", "send", tool(b'{"price": "1", "category": "tool"}', "Bad"),
     422, "invalid_request"),
    ("tool name in path 100 chars", "send",
     tool(b'{"price": "1", "category": "tool"}', "t" * 100), 422, "invalid_request"),
    # --- invoke ---
    ("invoke unknown tool", "send", req("POST", "/v1/tools/no_such_tool/invoke", b"{}"), 404,
     "not_found"),
    ("invoke tool without upstream", "send", req("POST", "/v1/tools/web_search/invoke", b"{}"),
     404, "not_found"),
    ("invoke tool name bad", "send", req("POST", "/v1/tools/Bad!/invoke", b"{}"), 422,
     "invalid_request"),
    ("invoke body over the limit", "send",
     req("POST", "/v1/tools/web_search/invoke", b"x" * 70_000), 413, "body_too_large"),
    # --- query strings ---
    ("agents list limit 5000 digits", "send",
     req("GET", "/v1/agents?limit=" + "9" * 5000, who="admin"), 422, "invalid_request"),
    ("agents list limit negative", "send", req("GET", "/v1/agents?limit=-1", who="admin"), 422,
     "invalid_request"),
    ("agents list cursor bad", "send", req("GET", "/v1/agents?cursor=%00", who="admin"), 422,
     "invalid_request"),
]
CASES[[c[0] for c in CASES].index("unknown path")] = (
    "unknown path", "send", req("GET", "/v1/nothing-here"), 404, "not_found")


@pytest.fixture(scope="module")
def corpus_stack() -> Iterator[tuple[Gateway, redis.Redis]]:
    with redis_server() as (redis_url, _), \
            running_gateway(redis_url, IOU_HEADER_TIMEOUT_S=str(TIMEOUT_S),
                            IOU_BODY_TIMEOUT_S=str(TIMEOUT_S)) as gw:
        seed_tools(gw)
        client = redis.Redis.from_url(redis_url)
        try:
            yield gw, client
        finally:
            client.close()


@pytest.fixture(scope="module")
def victim(corpus_stack: tuple[Gateway, redis.Redis]) -> dict[bytes, bytes]:
    gw, _ = corpus_stack
    agent, api_key = new_agent(gw, "5", "victim")
    with gw.agent(api_key) as client:
        response = client.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "1",
                                                  "ttl_s": 3600})
    assert response.status_code == 201, response.text
    return {b"@KEY@": api_key.encode(), b"@ADMIN@": ADMIN_TOKEN.encode(),
            b"@AGENT@": agent.encode(), b"@HOLD@": response.json()["hold_id"].encode()}


def _state(gw: Gateway, client: redis.Redis, agent: str) -> tuple[Any, ...]:
    """What a refused request must leave as it was: the victim's money, every agent, every
    tool, Redis's balances and holds, and the ledger's rows (once the writer caught up)."""
    deadline = time.monotonic() + 10
    while any(client.xlen(k) for k in client.keys("*:events")):
        assert time.monotonic() < deadline, "the ledger writer did not drain the streams"
        time.sleep(0.05)
    with gw.admin() as admin:
        detail = admin.get(f"/v1/agents/{agent}").json()
        names = admin.get("/v1/agents", params={"limit": 1000}).json()
        tools = admin.get("/v1/tools").json()
    db = sqlite3.connect(gw.data_dir / "ledger.db")
    try:
        rows = db.execute("SELECT count(*), coalesce(sum(amount), 0) FROM ledger_entries"
                          ).fetchone()
    finally:
        db.close()
    return detail, names, tools, rows


def _send(url: str, mode: str, raw: bytes) -> RawResponse | None:
    with connect(url, 15) as sock:
        # The gateway may answer and close before it took the whole request: read that.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
            if mode == "half-close":
                sock.shutdown(socket.SHUT_WR)
        return read_response(sock, TIMEOUT_S + 10)


def test_the_corpus_holds_at_least_164_kinds() -> None:
    assert len(CASES) >= 164
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_gets_its_json_error_and_changes_nothing(
        corpus_stack: tuple[Gateway, redis.Redis], victim: dict[bytes, bytes], case: Case
) -> None:
    gw, client = corpus_stack
    _, mode, raw, status, code = case
    for placeholder, value in victim.items():
        raw = raw.replace(placeholder, value)
    agent = victim[b"@AGENT@"].decode()
    before = _state(gw, client, agent)
    response = _send(gw.url, mode, raw)
    if status is None:
        assert response is None or response.status in (400, 408), response
    else:
        assert response is not None, "closed without an answer"
        assert response.status == status, (response.status, response.body[:300])
    if response is not None:
        assert response.status < 500 or response.status in (503, 505), response
        assert response.headers.get("content-type") == "application/json", response
        payload = response.json()
        assert set(payload) >= {"error", "message"}, payload
        assert isinstance(payload["message"], str) and payload["message"]
        if code is not None:
            assert payload["error"] == code, payload
            if payload["error"] == "invalid_request":
                assert payload["field"] and payload["reason"], payload
    assert _state(gw, client, agent) == before


def test_the_gateway_still_serves_after_the_corpus(corpus_stack: tuple[Gateway, redis.Redis],
                                                   victim: dict[bytes, bytes]) -> None:
    response = httpx.post(corpus_stack[0].url + "/v1/charge", json={"tool": "web_search"},
                          headers={"authorization": "Bearer " + victim[b"@KEY@"].decode()})
    assert response.status_code == 200, response.text
