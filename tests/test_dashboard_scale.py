"""The dashboard with 100,000 agents in the store, in a real Chromium: the first screen in
under 1 s, sorting and paging by the server, and the gateway's charge capacity while dashboards
poll within 5 % of its capacity without them (phases alternated, medians compared)."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.bulk_agents import load_agents
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import seed_tools
from tests.servers import redis_server
from tests.test_dashboard import ARTIFACTS, browser, open_page

pytestmark = pytest.mark.slow
__all__ = ["browser"]  # the module-scoped Chromium fixture, shared

AGENTS = 100_000
KEYED_AGENTS = 256  # the agents the load generator charges
PHASE_S = 3
PHASE_PAIRS = 10
DASHBOARDS = 3  # open dashboards polling during a "with" phase
FIRST_SCREEN_S_MAX = 1.0
RATE_LOSS_MAX = 0.05
WRK_SCRIPT = Path(__file__).resolve().parent.parent / "loadtests" / "wrk_charge.lua"


@dataclass(frozen=True)
class Big:
    gw: Gateway
    keys: list[str]
    redis_pid: int


@pytest.fixture(scope="module")
def big() -> Iterator[Big]:
    """A gateway over a store of 100,000 agents; yields it, the keys of a few of them and
    the pid of its Redis."""
    with redis_server() as (url, redis_process), running_gateway(url) as gw:
        seed_tools(gw)
        started = time.monotonic()
        created = load_agents(url, AGENTS, "fleet-", keyed=KEYED_AGENTS)
        print(f"\nloaded {AGENTS} agents in {time.monotonic() - started:.1f} s")
        wait_for_ledger(gw)
        # The first reading of the whole table (cold): what each rebuild costs.
        processes = [gw.process.pid, redis_process.pid]
        cpu_before = [cpu_s(p) for p in processes]
        started = time.monotonic()
        with gw.admin() as admin:
            first = admin.get("/v1/summary", params={"limit": "1"}, timeout=120).json()
        gateway_cpu, redis_cpu = (cpu_s(p) - b for p, b in zip(processes, cpu_before,
                                                               strict=True))
        print(f"cold summary table of {first['totals']['agents']} agents: "
              f"{time.monotonic() - started:.2f} s, CPU: gateway {gateway_cpu:.2f} s, "
              f"redis {redis_cpu:.2f} s")
        yield Big(gw, [key for _, key in created[:KEYED_AGENTS]], redis_process.pid)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (not its children), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after the command's name
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_ledger(gw: Gateway) -> None:
    """Until the ledger writer has caught up with the 200,000 creation events (it would
    otherwise compete with the measured phases)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = httpx.get(gw.url + "/metrics", timeout=10).text
        found = re.search(r"^iou_ledger_pending_entries\S* ([0-9.e+]+)$", text, re.M)
        if found is not None and float(found.group(1)) < 100:
            return
        time.sleep(1)
    raise AssertionError("the ledger writer did not catch up in 300 s")


def signed_in(browser: Browser, gw: Gateway) -> tuple[Page, list[str], list[str]]:
    page, errors, foreign = open_page(browser, gw, 1280, 800)
    page.evaluate(f"sessionStorage.setItem('iou-token', {ADMIN_TOKEN!r})")
    return page, errors, foreign


def test_first_screen_sort_and_pages_at_100k(browser: Browser, big: Big) -> None:
    gw = big.gw
    page, errors, foreign = signed_in(browser, gw)
    page.goto("about:blank")  # so that the timed load is a whole page load
    started = time.monotonic()
    page.goto(gw.url + "/dashboard/#/")
    expect(page.locator("#agents tbody tr")).to_have_count(50)
    expect(page.locator("#total-agents")).to_have_text("100,000")
    first_screen_s = time.monotonic() - started
    print(f"first screen with {AGENTS} agents: {first_screen_s * 1000:.0f} ms")
    page.screenshot(path=ARTIFACTS / "overview-100k.png", full_page=True)
    assert first_screen_s < FIRST_SCREEN_S_MAX

    page.locator("th[data-sort=balance] button").click()  # ascending, as numbers
    expect(page.locator("th[data-sort=balance]")).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#agents tbody tr").first.locator("td.balance")).to_have_text(
        re.compile(r"^0\s*(low)?$"))
    ascending = balances(page)
    assert ascending == sorted(ascending)
    page.locator("th[data-sort=balance] button").click()
    expect(page.locator("#agents tbody tr").first.locator("td.balance")).to_have_text(
        "99.99")
    descending = balances(page)
    assert descending == sorted(descending, reverse=True)
    page.click("#next")
    expect(page.locator("#where")).to_contain_text("51–100 of 100,000")
    assert balances(page)[0] <= descending[-1]
    page.fill("input[type=search]", "fleet-09999")
    expect(page.locator("#agents tbody tr")).to_have_count(10)  # fleet-099990 .. 099999
    expect(page.locator("#where")).to_contain_text("of 10")
    assert errors == [] and foreign == []
    page.close()


def test_a_poll_costs_little_cpu(big: Big) -> None:
    """What a dashboard's 2 s poll costs the gateway: its CPU time, which the machine's
    other load inflates less than a wall-clock figure."""
    gw = big.gw
    worker = gw.process.pid
    polls = 200
    with gw.admin() as admin:
        admin.get("/v1/summary", params={"sort": "spent_today"}).raise_for_status()
        before = cpu_s(worker)
        cursors: dict[str, str | None] = {}  # each order pages on: polls of later pages
        for i in range(polls):
            sort = ("balance", "held", "agent")[i % 3]
            cursor = cursors.get(sort)
            params = {"sort": sort, "order": "desc", "limit": "50",
                      **({"cursor": cursor} if cursor else {})}
            page = admin.get("/v1/summary", params=params).json()
            assert len(page["agents"]) == 50
            cursors[sort] = page["next_cursor"]
        per_poll_ms = (cpu_s(worker) - before) / polls * 1000
    print(f"gateway CPU per summary poll at {AGENTS} agents: {per_poll_ms:.2f} ms")
    assert per_poll_ms < 5


def balances(page: Page) -> list[Decimal]:
    texts = page.locator("#agents tbody td.balance").all_inner_texts()
    return [Decimal(t.replace("low", "").strip()) for t in texts]


@dataclass(frozen=True)
class Phase:
    charges_per_s: float
    cpu_us_per_charge: float  # the gateway's and its Redis's CPU, dashboard polls included
    polls: int  # summary requests the dashboards sent during the phase


def charge_phase(gw: Gateway, keys_file: str, round_name: str) -> tuple[float, int]:
    """Charges per second and their count that wrk drove through the gateway for PHASE_S
    seconds (every answer must be a 200: a refusal would measure something else)."""
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", "16", "-d", f"{PHASE_S}s", "-s", str(WRK_SCRIPT), gw.url,
         "--", keys_file, "/v1/charge", '{"tool":"calc"}', round_name],
        capture_output=True, text=True, check=True, timeout=PHASE_S + 60).stdout
    assert "Non-2xx" not in out, out
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    assert rate is not None and count is not None, out
    return float(rate.group(1)), int(count.group(1))


def test_charge_rate_while_dashboards_poll(browser: Browser, big: Big) -> None:
    """Short phases, alternated in pairs (the order flipped every pair, so a drift of the
    machine's other load falls on both sides), compared by the median of the pairs' ratios.
    Between "with" phases the dashboards stay open on the tools page, which polls nothing.

    What is compared is the gateway's capacity: the CPU time the gateway process and its
    Redis spend per charge, the dashboards' polls included (a CPU-bound gateway's charge rate
    is its cores divided by that). The wall-clock rate is printed too, but on this one
    machine it also pays for the browser's own rendering (which runs on the operator's
    computer, not the gateway's) and for whatever else the shared cores run, so it is not
    what the assertion reads. The dashboards must really have polled: every open one at
    least every 2 s, counted from the browser's requests."""
    gw = big.gw
    assert shutil.which("wrk"), "wrk is needed: apt-get install wrk"
    with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as f:
        f.write("\n".join(big.keys) + "\n")
    pages = [signed_in(browser, gw)[0] for _ in range(DASHBOARDS)]
    polls = [0]

    def count_poll(url: str) -> None:
        if "/v1/summary" in url:
            polls[0] += 1

    for p in pages:  # each sorted by balance, the costliest order to keep
        p.goto(gw.url + "/dashboard/#/")
        p.locator("th[data-sort=balance] button").click()
        expect(p.locator("#agents tbody tr")).to_have_count(50)
        p.on("request", lambda r: count_poll(r.url))
    served = (gw.process.pid, big.redis_pid)

    def phase(polling: bool, name: str) -> Phase:
        for p in pages:
            p.evaluate(f"location.hash = {'#/' if polling else '#/tools'!r}")
        polls_before, cpu_before = polls[0], sum(cpu_s(pid) for pid in served)
        rate, count = charge_phase(gw, f.name, name)
        cpu_us = (sum(cpu_s(pid) for pid in served) - cpu_before) * 1e6
        for p in pages:  # the sync API delivers the browser's events during its own calls
            p.evaluate("0")
        return Phase(rate, cpu_us / count, polls[0] - polls_before)

    without: list[Phase] = []
    with_dashboards: list[Phase] = []
    for i in range(PHASE_PAIRS):
        for polling in ((False, True) if i % 2 == 0 else (True, False)):
            (with_dashboards if polling else without).append(phase(polling, f"r{i}{polling}"))
    for p in pages:
        p.close()
    Path(f.name).unlink()
    capacity = statistics.median(o.cpu_us_per_charge / w.cpu_us_per_charge
                                 for w, o in zip(with_dashboards, without, strict=True))
    wall = statistics.median(w.charges_per_s / o.charges_per_s
                             for w, o in zip(with_dashboards, without, strict=True))
    print(f"CPU µs per charge (gateway + Redis) without dashboards "
          f"{[round(p.cpu_us_per_charge) for p in without]}, with {DASHBOARDS} polling "
          f"{[round(p.cpu_us_per_charge) for p in with_dashboards]}: capacity ratio "
          f"{capacity:.3f}; wall-clock charges/s {[round(p.charges_per_s) for p in without]} vs "
          f"{[round(p.charges_per_s) for p in with_dashboards]}: ratio {wall:.3f}; polls per "
          f"phase {[p.polls for p in with_dashboards]} (without: {sum(p.polls for p in without)})")
    polls_min = DASHBOARDS * (PHASE_S // 2)  # every dashboard at least once per 2 s
    assert all(p.polls >= polls_min for p in with_dashboards)
    assert capacity >= 1 - RATE_LOSS_MAX
