"""Each `iou` command against a real gateway on the embedded default in a temp dir."""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from gateway.cli.main import WRITER_NICENESS
from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import unique


@pytest.fixture(scope="module")
def embedded_gateway() -> Iterator[Gateway]:
    with running_gateway(None, admin_token=None) as gw:
        yield gw


def iou(gw: Gateway, *args: str, data_dir: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_URL": gw.url, "IOU_DATA_DIR": data_dir or str(gw.data_dir),
                "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def api(gw: Gateway, method: str, path: str) -> dict[str, object]:
    token = (gw.data_dir / "admin_token").read_text().strip()
    response = httpx.request(method, gw.url + path, headers={"authorization": f"Bearer {token}"})
    body: dict[str, object] = response.json()
    return body


def make_agent(gw: Gateway, grant: str = "5") -> str:
    name = unique("cli")
    done = iou(gw, "--json", "agents", "create", name, "--grant", grant)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["agent"] == name
    return name


def test_token_file_is_private(embedded_gateway: Gateway) -> None:
    mode = (embedded_gateway.data_dir / "admin_token").stat().st_mode & 0o777
    assert mode == 0o600


def test_agents_create_and_list(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = unique("cli")
    human = iou(gw, "agents", "create", name)
    assert human.returncode == 0 and "iou_" in human.stdout and "10 IOU" in human.stdout
    listed = iou(gw, "--json", "agents", "list")
    rows = {a["agent"]: a for a in json.loads(listed.stdout)["agents"]}
    assert rows[name]["balance"] == "10"
    table = iou(gw, "agents", "list").stdout
    assert name in table


def test_fund_with_agent_before_or_after(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = make_agent(gw, "0")
    after = iou(gw, "fund", "--agent", name, "--amount", "20")
    assert after.returncode == 0 and "balance 20 IOU" in after.stdout
    before = iou(gw, "--agent", name, "--json", "fund", "--amount", "0.5")
    assert json.loads(before.stdout)["balance"] == "20.5"
    assert api(gw, "GET", f"/v1/agents/{name}")["balance"] == "20.5"


def test_bad_amount_and_unknown_agent_exit_1(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = make_agent(gw)
    for amount in ("abc", "-1", "1e3", "0.0000001"):
        bad = iou(gw, "fund", "--agent", name, "--amount", amount)
        assert bad.returncode == 1 and "invalid_request" in bad.stderr
    ghost = iou(gw, "fund", "--agent", "no-such-agent", "--amount", "1")
    assert ghost.returncode == 1 and "not_found" in ghost.stderr
    assert api(gw, "GET", f"/v1/agents/{name}")["balance"] == "5"


def test_usage_errors_exit_2(embedded_gateway: Gateway) -> None:
    assert iou(embedded_gateway, "fund", "--amount", "1").returncode == 2  # no --agent
    assert iou(embedded_gateway, "nonsense").returncode == 2


def test_limits_seed_workflow(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = make_agent(gw)
    done = iou(gw, "--json", "limits", "--agent", name, "--commerce", "75", "--daily", "20",
               "--llm", "0.05", "--category", "search=0.1", "--low-balance", "2")
    assert done.returncode == 0, done.stderr
    limits = json.loads(done.stdout)
    assert limits == api(gw, "GET", f"/v1/agents/{name}/limits")
    assert limits["daily"] == "20" and limits["low_balance"] == "2"
    assert limits["categories"] == {"commerce": {"per_call": "75"}, "llm": {"per_call": "0.05"},
                                    "search": {"per_call": "0.1"}}
    shown = iou(gw, "limits", "--agent", name).stdout
    assert "commerce.per_call" in shown and "75" in shown
    removed = json.loads(iou(gw, "--json", "limits", "--agent", name, "--daily", "none").stdout)
    assert removed["daily"] is None


def test_tools_set_list_and_status(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    tool = unique("t").replace("-", "_")
    assert iou(gw, "tools", "set", tool, "--price", "0.3", "--category", "tool").returncode == 0
    listed = json.loads(iou(gw, "--json", "tools", "list").stdout)["tools"]
    assert {"tool": tool, "price": "0.3"}.items() <= next(
        t for t in listed if t["tool"] == tool).items()
    name = make_agent(gw, "0.5")
    iou(gw, "limits", "--agent", name, "--daily", "3")
    status = iou(gw, "status", "--agent", name)
    assert status.returncode == 0
    assert "balance 0.5 IOU" in status.stdout and "LOW BALANCE" in status.stdout
    assert tool in status.stdout and "0.3" in status.stdout and "daily caps" in status.stdout
    as_json = json.loads(iou(gw, "--json", "status", "--agent", name).stdout)
    assert as_json["agent"]["balance"] == api(gw, "GET", f"/v1/agents/{name}")["balance"]


def test_demo_then_ledger_csv(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    demo = iou(gw, "demo")
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    assert '→ web_search("competitor pricing update")  -0.05  [8.25 IOU remaining]' in lines
    assert any("web_browse" in line and "-0.12  [8.13 IOU remaining]" in line for line in lines)
    assert any("llm_summarize" in line and "-0.08  [8.05 IOU remaining]" in line
               for line in lines)
    assert any("email_send" in line and "-0.02  [8.03 IOU remaining]" in line for line in lines)
    assert any("low balance" in line for line in lines)
    refused = [line for line in lines if line.startswith("✗ web_browse refused")]
    assert refused and "balance_insufficient" in refused[0]
    stops = [line for line in lines if line.startswith("✗ call")]
    assert len(stops) == 2
    assert stops[0].startswith("✗ call 11 refused: limit_exceeded calls_per_day (max 10")
    assert stops[0].endswith("with 8.8 IOU still in the balance")
    assert stops[1].startswith("✗ call 4 refused: loop_detected")
    assert sum("near the call cap" in line for line in lines) == 2
    agent = lines[0].split()[1]
    assert api(gw, "GET", f"/v1/agents/{agent}")["balance"] == "0.11"
    exported = iou(gw, "ledger", "--agent", agent, "--limit", "1000", "--csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    entries = api(gw, "GET", f"/v1/agents/{agent}/ledger?limit=1000")["entries"]
    assert isinstance(entries, list) and len(rows) == len(entries)
    assert [r["entry_id"] for r in rows] == [e["entry_id"] for e in entries]
    assert rows[-1]["kind"] == "grant" and rows[-1]["amount"] == "+8.3"
    as_json = json.loads(iou(gw, "--json", "ledger", "--agent", agent, "--limit", "5").stdout)
    assert len(as_json["entries"]) == 5


def test_no_token_and_no_gateway_are_one_line(embedded_gateway: Gateway, tmp_path: object
                                              ) -> None:
    gw = embedded_gateway
    missing = iou(gw, "agents", "list", data_dir=str(tmp_path))
    assert missing.returncode == 1 and "no admin token" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    down = iou(gw, "--url", "http://127.0.0.1:9", "--token", "x" * 20, "agents", "list")
    assert down.returncode == 1 and "http://127.0.0.1:9" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_reconcile_and_recover_commands(embedded_gateway: Gateway) -> None:
    import redis

    gw = embedded_gateway
    name = make_agent(gw, "3")
    clean = iou(gw, "reconcile")
    assert clean.returncode == 0 and "clean" in clean.stdout, clean.stderr
    client = redis.Redis.from_url((gw.data_dir / "redis.url").read_text().strip())
    agent_key = next(k for k in client.scan_iter(f"iou:*:agent:{name}"))
    client.hincrby(agent_key, "bal", 7)  # tampering: Redis now disagrees with the ledger
    drift = iou(gw, "reconcile")
    assert drift.returncode == 1 and f"DRIFT {name}: redis 3.000007, ledger 3" in drift.stdout
    assert "iou_reconcile_drift_agents 1.0" in httpx.get(gw.url + "/metrics").text
    client.hincrby(agent_key, "bal", -7)
    assert iou(gw, "reconcile").returncode == 0
    refused = iou(gw, "recover")
    assert refused.returncode == 1 and "empty Redis" in refused.stderr
    client.close()


@pytest.mark.parametrize(("variable", "value"), [
    ("IOU_AMOUNT_MAX", "lots"), ("IOU_BODY_BYTES_MAX", "-1"), ("IOU_REDIS_URL", "http://x"),
    ("IOU_LEDGER_URL", "mysql://x"), ("IOU_SIGNUP_GRANT", "1e3"), ("IOU_ADMIN_TOKEN", "short"),
])
def test_bad_configuration_is_one_line_naming_it(tmp_path: object, variable: str,
                                                 value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_DATA_DIR": str(tmp_path), variable: value})
    done = subprocess.run([sys.executable, "-m", "gateway.cli.main", "serve", "--port", "9"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith((f"iou: {variable}=", f"iou: {variable}:")), done.stderr


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def test_sigterm_stops_the_writer_and_the_embedded_redis() -> None:
    import time

    with running_gateway(None, admin_token=None) as gw:
        children = _children(gw.process.pid)
        assert len(children) >= 2  # the ledger writer and the embedded redis-server
        writers = [pid for pid in children
                   if b"writer" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(writers) == 1
        # Background work: the writer runs at a lower priority than the gateway.
        assert os.getpriority(os.PRIO_PROCESS, writers[0]) == (
            os.getpriority(os.PRIO_PROCESS, gw.process.pid) + WRITER_NICENESS)
        gw.process.terminate()
        gw.process.wait(30)
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{pid}") for pid in children):
            assert time.monotonic() < deadline, "children left running after SIGTERM"
            time.sleep(0.1)


# ---- --json everywhere ---------------------------------------------------------------

def _json_commands(name: str, tool: str, other: str) -> list[list[str]]:
    return [["agents", "create", other, "--grant", "1"], ["agents", "list"],
            ["fund", "--agent", name, "--amount", "1"], ["limits", "--agent", name],
            ["limits", "--agent", name, "--daily", "5"], ["status", "--agent", name],
            ["status"], ["ledger", "--agent", name],
            ["tools", "set", tool, "--price", "0.1", "--category", "tool"], ["tools", "list"],
            ["freeze", "--agent", name], ["unfreeze", "--agent", name], ["reconcile"]]


@pytest.mark.parametrize("where", ["global", "after the subcommand"])
def test_every_client_command_prints_json(embedded_gateway: Gateway, where: str) -> None:
    gw = embedded_gateway
    name = make_agent(gw)
    tool = unique("tj").replace("-", "_")
    for command in _json_commands(name, tool, unique("cli")):
        args = ["--json", *command] if where == "global" else [*command, "--json"]
        done = iou(gw, *args)
        assert done.returncode == 0, (command, done.stderr)
        assert isinstance(json.loads(done.stdout), dict), (command, done.stdout)


def test_demo_and_reconcile_json(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    demo = iou(gw, "demo", "--json")
    assert demo.returncode == 0, demo.stderr
    result = json.loads(demo.stdout)
    assert result["grant"] == "8.3" and result["refusal"]["error"] == "balance_insufficient"
    assert result["calls"][0] == {"tool": "web_search", "arg": "competitor pricing update",
                                  "cost": "0.05", "balance": "8.25", "warnings": []}
    assert result["balance"] == result["calls"][-1]["balance"] == "0.11"
    assert [e["kind"] for e in result["ledger"]][:1] == ["charge"]
    # The runaway monitor: its call cap stops it at call 11, its balance healthy.
    monitor = result["monitor"]
    assert monitor["refused_at"] == 11 and len(monitor["calls"]) == 10
    assert monitor["refusal"] | {"message": "", "retry_after_s": 0} == {
        "error": "limit_exceeded", "message": "", "limit": "calls_per_day", "scope": "tool",
        "tool": "web_browse", "category": "tool", "max": 10, "retry_after_s": 0}
    assert monitor["balance"] == "8.8"  # 10 - 10 x 0.12
    assert [c["warnings"] for c in monitor["calls"]][-3:] == [[], ["calls_near"],
                                                              ["calls_near"]]
    assert api(gw, "GET", f"/v1/agents/{monitor['agent']}")["balance"] == "8.8"
    # The loop: the 4th identical search is refused by the loop breaker.
    loop = result["loop"]
    assert loop["refused_at"] == 4 and loop["balance"] == "9.85"
    assert loop["refusal"] | {"message": "", "retry_after_s": 0} == {
        "error": "loop_detected", "message": "", "tool": "web_search", "repeats": 3,
        "window_s": 60, "retry_after_s": 0}
    reconciled = json.loads(iou(gw, "reconcile", "--json").stdout)
    assert reconciled["clean"] is True and reconciled["drift"] == []
    assert reconciled["checked"] >= 1


def test_refusals_with_json_are_one_json_line_on_stderr(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    ghost = iou(gw, "--json", "fund", "--agent", "no-such-agent", "--amount", "1")
    assert ghost.returncode == 1 and ghost.stdout == ""
    error = json.loads(ghost.stderr)
    assert error["error"] == "not_found" and error["message"]
    refused = iou(gw, "recover", "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stderr)["error"] == "not_empty"
    both = iou(gw, "--json", "ledger", "--agent", make_agent(gw), "--csv")
    assert both.returncode == 2


# ---- the ledger: a hold and its capture are not two charges --------------------------

def _agent_key(gw: Gateway, grant: str) -> tuple[str, str]:
    name = unique("cli")
    created = json.loads(iou(gw, "--json", "agents", "create", name, "--grant", grant).stdout)
    return name, created["api_key"]


def _as_agent(gw: Gateway, key: str, path: str, body: dict[str, str] | None = None
              ) -> dict[str, Any]:
    response = httpx.post(gw.url + path, json=body, headers={"authorization": f"Bearer {key}"})
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_ledger_shows_holds_apart_from_spend(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    tool = unique("tv").replace("-", "_")
    assert iou(gw, "tools", "set", tool, "--price", "0.1", "--category", "llm",
               "--variable").returncode == 0
    name, key = _agent_key(gw, "1")
    captured = _as_agent(gw, key, "/v1/holds", {"tool": tool, "max_cost": "0.5"})["hold_id"]
    _as_agent(gw, key, f"/v1/holds/{captured}/capture", {"cost": "0.1"})
    released = _as_agent(gw, key, "/v1/holds", {"tool": tool, "max_cost": "0.2"})["hold_id"]
    _as_agent(gw, key, f"/v1/holds/{released}/release")
    _as_agent(gw, key, "/v1/holds", {"tool": tool, "max_cost": "0.3"})  # still open
    assert _as_agent(gw, key, "/v1/charge", {"tool": tool, "cost": "0.05"})["balance"] == "0.55"
    rows = _ledger_rows(gw, name, 7)
    assert [(r["kind"], r["amount"], r["held"]) for r in rows] == [
        ("charge", "-0.05", ""), ("hold", "", "+0.3"), ("release", "", "-0.2"),
        ("hold", "", "+0.2"), ("capture", "-0.1", "-0.5"), ("hold", "", "+0.5"),
        ("grant", "+1", "")]
    amount = sum(Decimal(r["amount"] or "0") for r in rows)
    held = sum(Decimal(r["held"] or "0") for r in rows)
    spent = -sum(Decimal(r["amount"]) for r in rows if r["amount"].startswith("-"))
    assert (amount, held, spent) == (Decimal("0.85"), Decimal("0.3"), Decimal("0.15"))
    assert amount - held == Decimal(rows[0]["balance_after"]) == Decimal("0.55")
    table = iou(gw, "ledger", "--agent", name).stdout
    lines = [line for line in table.splitlines()
             if line.startswith("│") and (" capture " in line or " hold " in line)]
    assert len(lines) == 4 and all("-0.5" not in line for line in lines if " hold " in line)
    assert "held" in table and "sums to funded - spent" in table


def _ledger_rows(gw: Gateway, name: str, count: int) -> list[dict[str, str]]:
    import time

    deadline = time.monotonic() + 10
    while True:
        done = iou(gw, "ledger", "--agent", name, "--csv")
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, done.stdout
        time.sleep(0.1)


# ---- exactly-once funding: Idempotency-Key from the CLI ------------------------------

class _LossyProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the gateway; the first POST is delivered but its answer is lost."""

    target: ClassVar[str] = ""
    keys: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = httpx.request(method, self.target + self.path, content=body, headers=headers)
        if method == "POST":
            _LossyProxy.keys.append(self.headers.get("idempotency-key"))
            if len(_LossyProxy.keys) == 1:
                self.close_connection = True  # the gateway acted; the caller hears nothing
                return
        self.send_response(answer.status_code)
        self.send_header("content-type", answer.headers.get("content-type", ""))
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def lossy_proxy(embedded_gateway: Gateway) -> Iterator[str]:
    _LossyProxy.target, _LossyProxy.keys = embedded_gateway.url, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LossyProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fund_retried_after_a_lost_answer_adds_once(embedded_gateway: Gateway,
                                                    lossy_proxy: str) -> None:
    gw = embedded_gateway
    name = make_agent(gw, "0")
    done = iou(gw, "--url", lossy_proxy, "--json", "fund", "--agent", name, "--amount", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["balance"] == "2"
    assert api(gw, "GET", f"/v1/agents/{name}")["balance"] == "2"
    sent = _LossyProxy.keys
    assert len(sent) == 2 and sent[0] is not None and sent[0] == sent[1]


def test_idempotency_key_option_repeats_the_first_result(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = make_agent(gw, "0")
    runs = [json.loads(iou(gw, "--json", "fund", "--agent", name, "--amount", "1",
                           "--idempotency-key", f"fund-{name}").stdout) for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]["balance"] == "1"
    fresh = [iou(gw, "fund", "--agent", name, "--amount", "1") for _ in range(2)]
    assert all(done.returncode == 0 for done in fresh)  # a new key per invocation
    assert api(gw, "GET", f"/v1/agents/{name}")["balance"] == "3"
    other = unique("cli")
    created = [iou(gw, "agents", "create", other, "--idempotency-key", f"create-{other}")
               for _ in range(2)]
    assert [c.returncode for c in created] == [0, 0], created[1].stderr
    assert f"created {other}" in created[1].stdout
    frozen = [iou(gw, "--json", "freeze", "--agent", name, "--idempotency-key", "f-" + name)
              for _ in range(2)]
    assert [json.loads(f.stdout)["frozen"] for f in frozen] == [True, True]


def test_limits_walls_flags(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = make_agent(gw)
    done = iou(gw, "--json", "limits", "--agent", name, "--hourly", "1", "--weekly", "5",
               "--monthly", "20", "--calls-per-day", "100", "--calls-per-minute", "10",
               "--tool", "web_browse:calls_per_day=10", "--tool", "web_browse:per_call=0.2",
               "--category-limit", "llm:hourly=0.5", "--category-limit",
               "commerce:calls_per_day=1")
    assert done.returncode == 0, done.stderr
    limits = json.loads(done.stdout)
    assert limits == api(gw, "GET", f"/v1/agents/{name}/limits")
    assert (limits["hourly"], limits["weekly"], limits["monthly"]) == ("1", "5", "20")
    assert limits["calls"] == {"per_minute": 10, "per_day": 100}
    assert limits["tools"] == {"web_browse": {"per_call": "0.2", "calls": {"per_day": 10}}}
    assert limits["categories"] == {"llm": {"hourly": "0.5"},
                                    "commerce": {"calls": {"per_day": 1}}}
    shown = iou(gw, "limits", "--agent", name).stdout
    assert "web_browse.calls.per_day" in shown and "calls.per_minute" in shown
    removed = json.loads(iou(gw, "--json", "limits", "--agent", name, "--tool",
                             "web_browse:calls_per_day=none", "--hourly", "none").stdout)
    assert removed["tools"] == {"web_browse": {"per_call": "0.2"}}
    assert "hourly" not in removed
    bad = iou(gw, "limits", "--agent", name, "--tool", "web_browse:daily=1")
    assert bad.returncode == 2 and "CAP" in bad.stderr


def test_limits_loop_flag(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = make_agent(gw)
    done = iou(gw, "--json", "limits", "--agent", name, "--loop", "5/60s")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["loop"] == {"repeats": 5, "window_s": 60, "action": "refuse"}
    frozen = json.loads(iou(gw, "--json", "limits", "--agent", name, "--loop",
                            "3/90s:freeze").stdout)
    assert frozen["loop"] == {"repeats": 3, "window_s": 90, "action": "freeze"}
    assert "3 calls / 90 s, freeze" in iou(gw, "limits", "--agent", name).stdout
    assert "loop" not in json.loads(iou(gw, "--json", "limits", "--agent", name, "--loop",
                                        "none").stdout)
    bad = iou(gw, "limits", "--agent", name, "--loop", "5 per minute")
    assert bad.returncode == 2 and "--loop" in bad.stderr
    out_of_range = iou(gw, "limits", "--agent", name, "--loop", "0/60s")
    assert out_of_range.returncode != 0 and "loop.repeats" in out_of_range.stderr


def test_a_port_in_use_is_one_clear_line_before_anything_claims_success(
        tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
        env["IOU_DATA_DIR"] = str(tmp_path / "data")
        done = subprocess.run([sys.executable, "-m", "gateway.cli.main", "serve", "--port",
                               str(port)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == "", done.stdout  # nothing claimed success first
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"port {port}" in lines[0] and "in use" in lines[0] and "--port" in lines[0]
    for claim in ("listening", r"\bready\b", "gateway on", "http://", "started"):
        assert not re.search(claim, lines[0].lower()), lines
    # Nothing was started for a gateway that cannot serve: no private Redis, no secrets.
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_serve_says_where_the_dashboard_is_and_what_to_try_next() -> None:
    import time

    with running_gateway(None, admin_token=None) as gw:
        port = gw.url.rsplit(":", 1)[1]
        deadline = time.monotonic() + 10
        while "iou demo" not in gw.log_text():
            assert time.monotonic() < deadline, gw.log_text()
            time.sleep(0.05)
        log = gw.log_text()
    assert f"Dashboard: http://127.0.0.1:{port}/dashboard" in log, log
    # Not the CLI's default URL: the next command says how to reach this gateway.
    assert f"IOU_URL=http://127.0.0.1:{port} iou demo" in log, log
