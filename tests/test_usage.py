"""Usage reports from the ledger, on SQLite and PostgreSQL: the query and its indexes, the
routes (own agent, admin, all agents, bounded ranges) and `iou usage`."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from gateway.ledger.entries import LedgerEntry
from gateway.ledger.store import LedgerStore
from gateway.ledger.usage import PAID_KINDS_SQL, usage, usage_query
from gateway.metering import ids
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import error_of, new_agent, seed_tools
from tests.pg import Postgres, reset_database

HOUR_MS = 3_600_000
DAY0_MS = 1_795_910_400_000  # 2026-11-29T00:00:00Z


def row(kind: str, agent: str, at_ms: int, paid: tuple[str, str, int], seq: int
        ) -> LedgerEntry:
    """A ledger row of ``kind`` at ``at_ms``; ``paid`` is (tool, category, amount micros)."""
    tool, category, amount = paid
    return LedgerEntry(ids.uuid7(), "p00", at_ms, seq, at_ms, kind, agent, tool, category,
                       amount, 0, amount if kind == "capture" else None, None, None, None,
                       None, None, None)


async def test_usage_sums_paid_rows_by_bucket(store: LedgerStore) -> None:
    at = DAY0_MS + 10 * HOUR_MS
    await store.write([
        row("charge", "ann", at + 5, ("web_search", "tool", 50_000), 1),
        row("charge", "ann", at + 6, ("web_search", "tool", 50_000), 2),
        row("capture", "ann", at + HOUR_MS + 1, ("llm", "llm", 80_000), 3),
        row("hold", "ann", at + 7, ("llm", "llm", 300_000), 4),  # moves no money for good
        row("release", "ann", at + 8, ("llm", "llm", 300_000), 5),
        row("fund", "ann", at + 9, ("", "", 9_000_000), 6),
        row("charge", "bob", at + 10, ("buy", "commerce", 1_500_000), 7),
        row("charge", "ann", at - 1, ("web_search", "tool", 50_000), 8),  # before the range
        row("charge", "ann", at + 2 * HOUR_MS, ("web_search", "tool", 50_000), 9),  # after
    ])
    since, until = at, at + 2 * HOUR_MS
    got = await usage(store, "tool", "hour", "ann", since, until)
    assert [(r.start_ms, r.key, r.calls, r.amount_micros) for r in got] == [
        (at, "web_search", 2, 100_000), (at + HOUR_MS, "llm", 1, 80_000)]
    everyone = await usage(store, "category", "day", None, DAY0_MS, DAY0_MS + 86_400_000)
    assert [(r.start_ms, r.key, r.calls, r.amount_micros) for r in everyone] == [
        (DAY0_MS, "commerce", 1, 1_500_000), (DAY0_MS, "llm", 1, 80_000),
        (DAY0_MS, "tool", 4, 200_000)]


async def test_usage_reads_its_index(store: LedgerStore, ledger_url: str) -> None:
    for agent in ("ann", None):
        sql, params = usage_query("tool", "hour", agent, DAY0_MS, DAY0_MS + HOUR_MS)
        assert PAID_KINDS_SQL in sql
        if ledger_url.startswith("sqlite"):
            plan = " ".join(str(r) for r in await store.query("EXPLAIN QUERY PLAN " + sql,
                                                              params))
            expected = "ledger_usage_agent" if agent else "ledger_usage_at"
            assert f"COVERING INDEX {expected}" in plan, plan
        else:
            names = {r[0] for r in await store.query(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'ledger_entries'", [])}
            assert {"ledger_usage_agent", "ledger_usage_at"} <= names


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def usage_gateway(request: pytest.FixtureRequest,
                  gateway_redis: tuple[str, subprocess.Popen[bytes]]) -> Iterator[Gateway]:
    redis.Redis.from_url(gateway_redis[0]).flushall()  # the other store's run left data
    if request.param == "postgres":
        server: Postgres = request.getfixturevalue("pg_server")
        reset_database(server.dsn)
        started = running_gateway(gateway_redis[0], IOU_LEDGER_URL=server.dsn)
    else:
        started = running_gateway(gateway_redis[0])
    with started as gw:
        seed_tools(gw)
        yield gw


def charged(gw: Gateway, key: str, tool: str, times: int, cost: str | None = None) -> None:
    body: dict[str, Any] = {"tool": tool, **({"cost": cost} if cost else {})}
    for _ in range(times):
        response = httpx.post(gw.url + "/v1/charge", json=body,
                              headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text


def report_when(gw: Gateway, path: str, calls: int, token: str = ADMIN_TOKEN,
                **params: str) -> dict[str, Any]:
    """The report once the ledger writer has written ``calls`` paid calls (a deadline)."""
    deadline = time.monotonic() + 20
    while True:
        response = httpx.get(gw.url + path, params=params,
                             headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["total"]["calls"] >= calls or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_agent_usage_routes(usage_gateway: Gateway) -> None:
    gw = usage_gateway
    name, key = new_agent(gw, "20", "use")
    other, other_key = new_agent(gw, "20", "use")
    charged(gw, key, "web_search", 3)
    charged(gw, key, "llm_summarize", 1, "0.07")
    charged(gw, other_key, "buy", 1)
    own = report_when(gw, f"/v1/agents/{name}/usage", 4, key)
    assert own["agent"] == name and own["by"] == "tool" and own["period"] == "hour"
    assert own["totals"] == [{"tool": "llm_summarize", "calls": 1, "amount": "0.07"},
                             {"tool": "web_search", "calls": 3, "amount": "0.15"}]
    assert own["total"] == {"calls": 4, "amount": "0.22"}
    assert {r["start"][-11:] for r in own["rows"]} == {":00:00.000Z"}
    by_day = report_when(gw, f"/v1/agents/{name}/usage", 4, ADMIN_TOKEN, by="category",
                         period="day")
    assert [(t["category"], t["amount"]) for t in by_day["totals"]] == [
        ("llm", "0.07"), ("tool", "0.15")]
    assert by_day["rows"][0]["start"].endswith("T00:00:00.000Z")
    everyone = report_when(gw, "/v1/usage", 5, by="category")
    assert {t["category"]: t["amount"] for t in everyone["totals"]}["commerce"] == "1.5"
    one = report_when(gw, "/v1/usage", 1, agent=other)
    assert one["totals"] == [{"tool": "buy", "calls": 1, "amount": "1.5"}]
    with gw.agent(key) as agent:
        assert error_of(agent.get(f"/v1/agents/{other}/usage")) == "forbidden"
        assert error_of(agent.get("/v1/usage")) == "forbidden"
    with gw.admin() as admin:
        assert error_of(admin.get("/v1/agents/nobody-here/usage")) == "not_found"


def test_usage_refusals(usage_gateway: Gateway) -> None:
    bad = [({"by": "agent"}, "by"), ({"period": "week"}, "period"),
           ({"since": "yesterday"}, "since"), ({"until": "2026-13-40"}, "until"),
           ({"since": "2026-11-29", "until": "2026-11-28"}, "since"),
           ({"since": "2026-01-01", "until": "2026-03-01"}, "since"),  # 59 days of hours
           ({"since": "2024-01-01", "until": "2026-01-01", "period": "day"}, "since"),
           ({"limit": "5"}, "limit")]
    with usage_gateway.admin() as admin:
        for params, field in bad:
            response = admin.get("/v1/usage", params=params)
            assert response.status_code == 422, (params, response.text)
            assert error_of(response) == "invalid_request"
            assert response.json()["field"] == field, params
        fine = admin.get("/v1/usage", params={"since": "2026-01-01", "until": "2026-12-31",
                                              "period": "day"})
        assert fine.status_code == 200 and fine.json()["since"] == "2026-01-01T00:00:00.000Z"


def iou(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_URL": gw.url, "IOU_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_iou_usage(usage_gateway: Gateway) -> None:
    gw = usage_gateway
    name, key = new_agent(gw, "20", "cliuse")
    charged(gw, key, "web_search", 2)
    report_when(gw, f"/v1/agents/{name}/usage", 2)
    as_csv = iou(gw, "usage", "--agent", name, "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["start", "tool", "calls", "amount"]
    assert rows[1][1:] == ["web_search", "2", "0.1"]
    text = iou(gw, "usage", "--agent", name, "--by", "category", "--period", "day")
    assert text.returncode == 0 and "0.1" in text.stdout and "total" in text.stdout
    as_json = iou(gw, "--json", "usage", "--period", "day")
    assert as_json.returncode == 0 and '"total"' in as_json.stdout
    refused = iou(gw, "usage", "--since", "2020-01-01")
    assert refused.returncode == 1 and "invalid_request" in refused.stderr
