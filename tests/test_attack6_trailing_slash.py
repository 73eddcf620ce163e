"""A path with a trailing slash (``PUT /v1/tools/``, ``GET /v1/agents/``) is answered like any
unknown path: the contract's JSON error, never an empty redirect built from the caller's Host
header; and the CLI reports it as an error instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import error_of

SLASHED = [("PUT", "/v1/tools/"), ("GET", "/v1/tools/"), ("GET", "/v1/agents/"),
           ("POST", "/v1/agents/"), ("POST", "/v1/tasks/"), ("POST", "/v1/holds/"),
           ("GET", "/v1/mcp/servers/")]


def test_a_trailing_slash_is_a_json_not_found(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        for method, path in SLASHED:
            response = admin.request(method, path, json={"price": "1", "category": "tool"},
                                     headers={"host": "evil.example"})
            assert response.status_code == 404, (method, path, response.status_code)
            assert error_of(response) == "not_found"
            assert "location" not in response.headers
        assert admin.get("/v1/tools/").status_code == 404
        assert "tools" in admin.get("/v1/tools").json()


def test_cli_tools_set_with_an_empty_name_is_an_error_not_a_traceback(
        gateway: Gateway) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env["IOU_ADMIN_TOKEN"] = ADMIN_TOKEN
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "--url", gateway.url, "tools", "set", "",
         "--price", "1", "--category", "tool"],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert "not_found" in result.stderr + result.stdout
    with httpx.Client(base_url=gateway.url, timeout=10,
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        assert "" not in {t["tool"] for t in admin.get("/v1/tools").json()["tools"]}
