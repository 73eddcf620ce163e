"""Each `iou` command against a real gateway on the embedded default in a temp dir."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli import WRITER_NICENESS
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
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env,
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
    agent = lines[0].split()[1]
    assert api(gw, "GET", f"/v1/agents/{agent}")["balance"] == "0.11"
    exported = iou(gw, "ledger", "--agent", agent, "--limit", "1000", "--csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    entries = api(gw, "GET", f"/v1/agents/{agent}/ledger?limit=1000")["entries"]
    assert isinstance(entries, list) and len(rows) == len(entries)
    assert [r["entry_id"] for r in rows] == [e["entry_id"] for e in entries]
    assert rows[-1]["kind"] == "grant" and rows[-1]["amount"] == "8.3"
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
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port", "9"],
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
