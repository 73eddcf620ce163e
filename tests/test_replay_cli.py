"""`iou replay` as an operator runs it: beside a serving gateway, on its ledger, never
touching its Redis; the JSON shape; filters; a bad limits file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent

LEDGER_WAIT_S = 30.0


def iou(gw: Gateway, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the gateway's environment: its data dir (the SQLite ledger) and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_DATA_DIR": str(gw.data_dir), "IOU_REDIS_URL": redis_url,
                "IOU_URL": gw.url})
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def snapshot(url: str) -> dict[bytes, Any]:
    """Every key of the live Redis with its content (a stream's entries: its consumer
    group's bookkeeping moves whenever the idle writer polls)."""
    client = redis.Redis.from_url(url)
    readers = {b"hash": client.hgetall, b"stream": lambda k: client.xrange(k, "-", "+"),
               b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
               b"set": client.smembers, b"list": lambda k: client.lrange(k, 0, -1),
               b"string": client.get}
    try:
        names: list[bytes] = sorted(client.keys("*"))  # type: ignore[arg-type]
        return {name: readers[client.type(name)](name)  # type: ignore[index]
                for name in names}
    finally:
        client.close()


def settled_snapshot(url: str) -> dict[bytes, Any]:
    """A snapshot once the gateway's own work is done: the writer has trimmed every event
    stream it committed (on its own schedule: two equal snapshots half a second apart were
    not enough, CI saw the trim land during the replay), and two in a row are equal."""
    deadline = time.monotonic() + LEDGER_WAIT_S
    last = snapshot(url)
    while True:
        time.sleep(0.5)
        now = snapshot(url)
        trimmed = all(not v for k, v in now.items() if k.endswith(b":events"))
        if now == last and trimmed:
            return now
        assert time.monotonic() < deadline, "the gateway's Redis never settled"
        last = now


def spend(gw: Gateway, key: str, charges: int, cost: str) -> None:
    with gw.agent(key) as agent:
        for _ in range(charges):
            answer = agent.post("/v1/charge", json={"tool": "llm_summarize", "cost": cost})
            assert answer.status_code == 200, answer.text


def wait_for_ledger(gw: Gateway, agent: str, rows: int) -> None:
    """Poll the agent's ledger until ``rows`` rows are in (the writer commits them)."""
    deadline = time.monotonic() + LEDGER_WAIT_S
    with gw.admin() as admin:
        while True:
            entries = admin.get(f"/v1/agents/{agent}/ledger", params={"limit": 1000}).json()
            if len(entries["entries"]) >= rows:
                return
            assert time.monotonic() < deadline, f"the ledger has {entries} of {rows}"
            time.sleep(0.1)


def write(path: Path, body: Any) -> Path:
    path.write_text(json.dumps(body))
    return path


def test_replay_beside_a_serving_gateway_leaves_its_redis_untouched(
        gateway: Gateway, gateway_redis: tuple[str, subprocess.Popen[bytes]],
        tmp_path: Path) -> None:
    redis_url = gateway_redis[0]
    big, big_key = new_agent(gateway, grant="10", prefix="replay-big")
    small, small_key = new_agent(gateway, grant="10", prefix="replay-small")
    spend(gateway, big_key, 5, "0.3")
    spend(gateway, small_key, 3, "0.05")
    wait_for_ledger(gateway, big, 6)  # the grant and 5 charges
    wait_for_ledger(gateway, small, 4)
    limits = write(tmp_path / "limits.json", {"default": {"per_call": "0.2"},
                                             "agents": {small: {"daily": "0.1"}}})
    before = settled_snapshot(redis_url)

    done = iou(gateway, redis_url, "replay", "--limits", str(limits), "--json")

    assert done.returncode == 0, done.stderr
    assert snapshot(redis_url) == before
    report = {a["agent"]: a for a in json.loads(done.stdout)["agents"]}
    assert report[big] == {"agent": big, "refused": {"count": 5, "amount": "1.5"},
                           "by_limit": {"per_call": {"count": 5, "amount": "1.5"}}}
    assert report[small] == {"agent": small, "refused": {"count": 1, "amount": "0.05"},
                             "by_limit": {"daily": {"count": 1, "amount": "0.05"}}}

    only = iou(gateway, redis_url, "replay", "--limits", str(limits), "--agent", small,
               "--since", "1h", "--json")
    assert only.returncode == 0, only.stderr
    assert [a["agent"] for a in json.loads(only.stdout)["agents"]] == [small]
    text = iou(gateway, redis_url, "replay", "--limits", str(limits), "--agent", big)
    assert text.returncode == 0, text.stderr
    assert f"{big}" in text.stdout and "per_call 5 (1.5)" in text.stdout
    assert snapshot(redis_url) == before


def test_a_bad_limits_file_is_one_line_and_exit_2(
        gateway: Gateway, gateway_redis: tuple[str, subprocess.Popen[bytes]],
        tmp_path: Path) -> None:
    for body in ('{"per_call": "-1"}', '{"daily": 1.0000001}', "{", '{"agents": []}'):
        path = tmp_path / "bad.json"
        path.write_text(body)
        done = iou(gateway, gateway_redis[0], "replay", "--limits", str(path))
        assert done.returncode == 2, (body, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("iou: replay:"), \
            done.stderr
    missing = iou(gateway, gateway_redis[0], "replay", "--limits", str(tmp_path / "none"))
    assert missing.returncode == 2 and "No such file" in missing.stderr
    since = iou(gateway, gateway_redis[0], "replay", "--limits", str(path), "--since", "x")
    assert since.returncode == 2
