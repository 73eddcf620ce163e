"""/openapi.json describes exactly what the server accepts and answers.

Schemathesis (from PyPI, the `test` extra) runs from outside against a live gateway on a
throwaway embedded store, once with an agent key and once with the admin token, every check
on, a fixed seed and a bounded number of examples; any finding fails the test. The
generator learns the catalog's pricing rules from tests/schemathesis_hooks.py (positive
requests only). Each run has
a gateway of its own: the admin run sets webhook URLs and upstreams at random, which the
agent run's charges must never reach (traffic stays on 127.0.0.1).

The fast tests below pin what earlier runs found, one by one, and the amount patterns the
document is built from.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from gateway.api.openapi import amount_schema, amount_text, openapi_document
from gateway.metering import money
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools

REPO = Path(__file__).resolve().parent.parent
SEED = 20261129
EXAMPLES_PER_OPERATION = 25
RUN_TIMEOUT_S = 240


@contextmanager
def _fuzz_gateway() -> Iterator[Gateway]:
    """A gateway on a throwaway embedded store, with the seed catalog. Failed
    authentications are what the ignored_auth check sends on purpose: the limiter (tested
    in test_auth_limits.py) would turn the 401s it expects into 429s."""
    with running_gateway(None, IOU_AUTH_FAILURES_PER_CLIENT="1000000",
                         IOU_AUTH_FAILURES_PER_CREDENTIAL="1000000",
                         IOU_AUTH_FAILURES_GLOBAL="100000000") as gw:
        seed_tools(gw)
        yield gw


# Which statuses count as "accepted" and "rejected". A schema-valid request may still meet
# the state of the store: 402 balance_insufficient, 404 (a generated name that does not
# exist), 409 (exists already, hold closed), 423 agent_frozen, 403/429 caps. Never 422:
# the schema promised the request was valid. A schema-invalid request must be refused as
# a client error, never acted on (2xx) nor charged (402) nor a server error.
# Two operations have a 422 that depends on the store's state, not on the request's shape:
# a capture without a cost is valid for a hold of a fixed-price tool and refused (cost
# required) for a variable-priced one; a child's limits must be at least as tight as its
# parent's current limits (a loop breaker null under a parent that has one is refused).
STATE_DEPENDENT_422 = ("POST /v1/holds/{hold_id}/capture", "POST /v1/agents/{agent}/children")
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "402", "403", "404", "409", "423", "429"]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
""" + "".join(f"""
[[operations]]
include-name = "{name}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "402", "403", "404",
                                                     "409", "422", "423", "429"]
""" for name in STATE_DEPENDENT_422)


# ---- the document's amount patterns ----------------------------------------------------

AMOUNT_MAXES = [money.AMOUNT_MAX_MICROS_DEFAULT, 1, 99, 100, 999_999, 1_000_000, 12_500_000,
                10_000_001, 123_456_789_012, money.BALANCE_MAX_MICROS]


def _accepted(text: str, max_micros: int, allow_zero: bool) -> bool:
    try:
        money.parse_amount(text, allow_zero=allow_zero, max_micros=max_micros)
    except money.AmountError:
        return False
    return True


def _candidates(rnd: random.Random, max_micros: int) -> list[str]:
    fixed = ["0", "0.0", "0.000000", "0.000001", "1", "10", "01", "1.", ".5", "1.0000000",
             "-1", "1e3", "+1", " 1", "1,000", money.format_amount(max_micros),
             money.format_amount(max_micros + 1), money.format_amount(max(max_micros - 1, 0))]
    drawn = []
    for _ in range(2000):
        whole = rnd.choice([0, rnd.randint(0, 10), rnd.randint(0, max_micros // 10**6 + 2),
                            rnd.randint(0, 10 ** rnd.randint(1, 17))])
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 7)))
        drawn.append(f"{whole}" if rnd.random() < 0.3 else f"{whole}.{digits}")
        drawn.append(money.format_amount(rnd.randint(0, max_micros + 5)))
    return fixed + drawn


@pytest.mark.parametrize("max_micros", AMOUNT_MAXES)
@pytest.mark.parametrize("allow_zero", [True, False])
def test_amount_strings_match_exactly_what_the_server_accepts(max_micros: int,
                                                              allow_zero: bool) -> None:
    text = jsonschema_rs.Draft202012Validator(amount_text(max_micros, allow_zero=allow_zero))
    whole = jsonschema_rs.Draft202012Validator(amount_schema(max_micros, allow_zero=allow_zero))
    for candidate in _candidates(random.Random(max_micros), max_micros):
        expected = _accepted(candidate, max_micros, allow_zero)
        assert text.is_valid(candidate) == expected, candidate
        assert whole.is_valid(candidate) == expected, candidate


def test_amount_numbers_in_the_schema_are_accepted_as_written_by_json_dumps() -> None:
    import json

    schema = jsonschema_rs.Draft202012Validator(amount_schema(money.AMOUNT_MAX_MICROS_DEFAULT,
                                                              allow_zero=False))
    rnd = random.Random(SEED)
    for _ in range(5000):
        micros = rnd.choice([rnd.randint(1, 10**6), rnd.randint(1, 10**15)])
        value: Any = micros // 10**6 if micros % 10**6 == 0 else micros / 10**6
        if schema.is_valid(value):
            literal = json.dumps(value)
            assert _accepted(literal, money.AMOUNT_MAX_MICROS_DEFAULT, False), literal
    assert not schema.is_valid(0) and not schema.is_valid(0.00001)  # "1e-05": refused


# ---- findings, one by one --------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_gateway() -> Iterator[Gateway]:
    with _fuzz_gateway() as gw:
        yield gw


def test_a_405_lists_every_method_of_the_path_in_allow(fuzz_gateway: Gateway) -> None:
    for path, allowed in [("/v1/agents", "GET, HEAD, POST"), ("/v1/charge", "POST"),
                          ("/v1/tools/x", "DELETE, PUT"), ("/dashboard/", "GET, HEAD")]:
        answer = httpx.request("TRACE", fuzz_gateway.url + path)
        assert answer.status_code == 405, path
        assert answer.headers["allow"] == allowed, path
        assert answer.json()["error"] == "method_not_allowed"


def test_the_root_leads_to_the_dashboard(fuzz_gateway: Gateway) -> None:
    answer = httpx.get(fuzz_gateway.url + "/")
    assert answer.status_code == 307 and answer.headers["location"] == "/dashboard"
    page = httpx.get(fuzz_gateway.url + "/", follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_a_batch_with_a_malformed_item_is_refused_whole(fuzz_gateway: Gateway) -> None:
    _, key = new_agent(fuzz_gateway, "5")
    with fuzz_gateway.agent(key) as agent:
        for bad, field in [({"cost": "1"}, "charges[1].tool"),
                           ({"tool": "web_search", "extra": 1}, "charges[1].extra"),
                           ("x", "charges[1]"),
                           ({"tool": "web_search", "cost": "1e3"}, "charges[1].cost")]:
            answer = agent.post("/v1/charges", json={"charges": [{"tool": "web_search"}, bad]})
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == field
        # Nothing was charged by the well-formed first item of those batches.
        assert agent.get("/v1/balance").json()["balance"] == "5"
        # A refusal that depends on the store stays the item's own.
        mixed = agent.post("/v1/charges", json={"charges": [{"tool": "web_search"},
                                                            {"tool": "nope"}]})
        assert [r.get("error", "ok") for r in mixed.json()["results"]] == ["ok", "not_found"]


def test_a_whole_number_written_with_a_zero_fraction_is_a_whole_number(
        fuzz_gateway: Gateway) -> None:
    _, key = new_agent(fuzz_gateway, "5")
    with fuzz_gateway.agent(key) as agent:
        hold = agent.post("/v1/holds", content=b'{"tool": "web_search", "ttl_s": 60.0}',
                          headers={"content-type": "application/json"})
        assert hold.status_code == 201, hold.text
        for bad in (b"60.5", b"6e1", b"-60.0", b"3601.0"):
            refused = agent.post("/v1/holds", content=b'{"tool": "web_search", "ttl_s": '
                                 + bad + b"}", headers={"content-type": "application/json"})
            assert refused.status_code == 422 and refused.json()["field"] == "ttl_s", bad


def test_invoking_a_tool_without_an_upstream_is_not_found(fuzz_gateway: Gateway) -> None:
    _, key = new_agent(fuzz_gateway, "5")
    with fuzz_gateway.agent(key) as agent:
        answer = agent.post("/v1/tools/web_search/invoke", json={})
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert "upstream" in answer.json()["message"]


# ---- schemathesis, from outside --------------------------------------------------------


# Operations left out of the fuzz run, each with why (tests/test_mcp.py covers them).
NOT_FUZZED = {
    # It connects to the URL in its body: generated URLs would send traffic off loopback.
    "put_v1_mcp_servers_server",
}


def _operation_ids(scheme: str) -> list[str]:
    """The operations a caller with ``scheme`` may call (the admin also gets the public
    ones), but those NOT_FUZZED."""
    ids = []
    for operations in openapi_document()["paths"].values():
        for op in operations.values():
            schemes = {name for requirement in op["security"] for name in requirement}
            if op["operationId"] in NOT_FUZZED:
                continue
            if scheme in schemes or (scheme == "admin" and not schemes):
                ids.append(op["operationId"])
    return ids


def _schemathesis(gw: Gateway, token: str, scheme: str, workdir: Path,
                  agent: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI on the operations ``scheme`` may call; an agent key's run names its own
    agent wherever a path takes one."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG + ("" if agent is None else
                                f'[parameters]\n"path.agent" = "{agent}"\n'))
    includes = [arg for op_id in _operation_ids(scheme)
                for arg in ("--include-operation-id", op_id)]
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               gw.url + "/openapi.json", "--checks", "all", "--seed", str(SEED),
               "--max-examples", str(EXAMPLES_PER_OPERATION), "--workers", "1",
               "--generation-database", "none", "--no-color", "--max-failures", "50",
               "--report-dir", str(workdir / "report"),
               "-H", f"Authorization: Bearer {token}", *includes]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": str(REPO)}
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          cwd=workdir, env=env)


def _verdict(done: subprocess.CompletedProcess[str]) -> str:
    summary = done.stdout[-6000:]
    return f"schemathesis exit {done.returncode} (seed {SEED}):\n{summary}\n{done.stderr[-2000:]}"


@pytest.mark.slow
def test_schemathesis_with_an_agent_key_finds_nothing(tmp_path: Path) -> None:
    with _fuzz_gateway() as gw:
        name, key = new_agent(gw, "1000", "fuzz")
        done = _schemathesis(gw, key, "agent", tmp_path, name)
    assert done.returncode == 0, _verdict(done)
    assert re.search(r"\d+ generated", done.stdout), _verdict(done)


@pytest.mark.slow
def test_schemathesis_with_the_admin_token_finds_nothing(tmp_path: Path) -> None:
    with _fuzz_gateway() as gw:
        done = _schemathesis(gw, ADMIN_TOKEN, "admin", tmp_path)
    assert done.returncode == 0, _verdict(done)
    assert re.search(r"\d+ generated", done.stdout), _verdict(done)
