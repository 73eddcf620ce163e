"""The dashboard with 100,000 agents in the store, in a real Chromium: the first screen in
under 1 s, sorting and paging by the server, and the gateway's charge capacity while dashboards
poll within 5 % of its capacity without them (the polls' CPU against the CPU of saturation)."""

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
from playwright.sync_api import Browser, Page, Request, expect

from gateway.metering.agent_table import AgentTables
from tests.bulk_agents import load_agents
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import seed_tools
from tests.servers import redis_server
from tests.test_dashboard import ARTIFACTS, browser, open_page

pytestmark = pytest.mark.slow
__all__ = ["browser"]  # the module-scoped Chromium fixture, shared

AGENTS = 100_000
KEYED_AGENTS = 256  # the agents the load generator charges
PHASE_S = 3  # one wrk phase of charges
CHARGE_PHASES = 5
POLL_PHASE_S = 6  # one idle phase, with or without dashboards polling
POLL_PHASE_PAIRS = 5
DASHBOARDS = 3  # open dashboards polling during a "with" phase
FIRST_SCREEN_S_MAX = 1.0
RATE_LOSS_MAX = 0.05
WRK_SCRIPT = Path(__file__).resolve().parent.parent / "loadtests" / "wrk_charge.lua"


@dataclass(frozen=True)
class Big:
    gw: Gateway
    keys: list[str]
    redis_pid: int
    rebuild_cpu_s: float  # gateway + Redis CPU of one reading of the whole agents table
    rebuild_wall_s: float


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
        rebuild_wall_s = time.monotonic() - started
        gateway_cpu, redis_cpu = (cpu_s(p) - b for p, b in zip(processes, cpu_before,
                                                               strict=True))
        print(f"cold summary table of {first['totals']['agents']} agents: "
              f"{time.monotonic() - started:.2f} s, CPU: gateway {gateway_cpu:.2f} s, "
              f"redis {redis_cpu:.2f} s")
        yield Big(gw, [key for _, key in created[:KEYED_AGENTS]], redis_process.pid,
                  gateway_cpu + redis_cpu, rebuild_wall_s)


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


class Dashboards:
    """DASHBOARDS open dashboards, signed in, sorted by balance (the costliest order to
    keep), each counting the summary polls it sends."""

    def __init__(self, browser: Browser, gw: Gateway, served: tuple[int, ...]) -> None:
        self.pages = [signed_in(browser, gw)[0] for _ in range(DASHBOARDS)]
        self.polls = 0
        self.served = served
        for p in self.pages:
            p.goto(gw.url + "/dashboard/#/")
            p.locator("th[data-sort=balance] button").click()
            expect(p.locator("#agents tbody tr")).to_have_count(50)
            p.on("request", self._count)

    def _count(self, request: Request) -> None:
        if "/v1/summary" in request.url:
            self.polls += 1

    def served_cpu_s(self) -> float:
        return sum(cpu_s(pid) for pid in self.served)

    def show(self, polling: bool) -> None:
        """The agents page (it polls) or the tools page (it polls nothing)."""
        for p in self.pages:
            p.evaluate(f"location.hash = {'#/' if polling else '#/tools'!r}")

    def idle_phase(self, polling: bool) -> tuple[float, int]:
        """CPU seconds the gateway and Redis spent over POLL_PHASE_S, and the polls sent."""
        self.show(polling)
        polls_before, cpu_before = self.polls, self.served_cpu_s()
        deadline = time.monotonic() + POLL_PHASE_S
        while time.monotonic() < deadline:
            for p in self.pages:  # the sync API delivers the browser's events in its calls
                p.evaluate("0")
            time.sleep(0.1)
        return self.served_cpu_s() - cpu_before, self.polls - polls_before

    def close(self) -> None:
        for p in self.pages:
            p.close()


def test_charge_rate_while_dashboards_poll(browser: Browser, big: Big) -> None:
    """The gateway's charge capacity while 3 dashboards poll stays within 5 % of without.

    A CPU-bound gateway's charge rate is the CPU its process and its Redis have divided by
    what a charge costs them, so what dashboards take from it is the CPU their polls cost
    (every poll, and the agents table's rebuilds they cause) as a share of the CPU the gateway
    and Redis spend per second when charges saturate them. Both are measured here, directly:
    the polls' cost as the CPU difference between idle phases with the dashboards polling and
    without (alternated, the order flipped every pair, so a drift of the machine's other load
    falls on both sides), the saturated spending from wrk phases. Comparing the CPU per charge
    of two loaded phases instead estimated a cost of a few % as the difference of two figures
    that swing by 30 % on 2 shared cores, and failed on noise. The dashboards must really have
    polled: every open one about every 2 s, counted from the browser's requests."""
    gw = big.gw
    assert shutil.which("wrk"), "wrk is needed: apt-get install wrk"
    with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as f:
        f.write("\n".join(big.keys) + "\n")
    dashboards = Dashboards(browser, gw, (gw.process.pid, big.redis_pid))
    cpu_s_by_arm = {True: 0.0, False: 0.0}
    polls_per_phase: dict[bool, list[int]] = {True: [], False: []}
    for i in range(POLL_PHASE_PAIRS):
        for polling in ((False, True) if i % 2 == 0 else (True, False)):
            cpu_phase_s, sent = dashboards.idle_phase(polling)
            cpu_s_by_arm[polling] += cpu_phase_s
            polls_per_phase[polling].append(sent)
    # Below the idle processes' own noise (a few ms per s) the difference may come out
    # negative: kept as measured, it is a small term either way.
    polls_cpu_per_s = ((cpu_s_by_arm[True] - cpu_s_by_arm[False])
                       / (POLL_PHASE_PAIRS * POLL_PHASE_S))
    dashboards.show(False)
    saturated: list[float] = []  # gateway + Redis CPU seconds per second, charges saturating
    rates: list[float] = []
    for i in range(CHARGE_PHASES):
        cpu_before, started = dashboards.served_cpu_s(), time.monotonic()
        rates.append(charge_phase(gw, f.name, f"r{i}")[0])
        saturated.append((dashboards.served_cpu_s() - cpu_before)
                         / (time.monotonic() - started))
    dashboards.close()
    Path(f.name).unlink()
    # A rebuild of the table (read by polls; about one per refresh age, which a phase this
    # short may miss) is counted at its measured cost spread over the refresh age.
    tables = AgentTables(None)
    refresh_age_s = min(tables.age_max_s, max(tables.age_min_s,
                                              big.rebuild_wall_s / tables.duty_max))
    rebuilds_cpu_per_s = big.rebuild_cpu_s / refresh_age_s
    loss = (polls_cpu_per_s + rebuilds_cpu_per_s) / statistics.median(saturated)
    print(f"{DASHBOARDS} dashboards polling cost the gateway + Redis "
          f"{polls_cpu_per_s * 1000:.1f} ms CPU per s, table rebuilds "
          f"{rebuilds_cpu_per_s * 1000:.1f} (polls per {POLL_PHASE_S} s phase "
          f"{polls_per_phase[True]}); saturated by charges they spend "
          f"{[round(s, 2) for s in saturated]} CPU s per s ({[round(r) for r in rates]} "
          f"charges/s): capacity loss {loss:.3%}")
    assert polls_per_phase[False] == [0] * POLL_PHASE_PAIRS
    # Each dashboard polls every 2 s but skips a tick while its last poll is in flight: over
    # a phase, every one at least POLL_PHASE_S // 2 - 1 times (the phase's edges and a loaded
    # machine's slow answers take one).
    polls_min = DASHBOARDS * (POLL_PHASE_S // 2 - 1)
    assert all(sent >= polls_min for sent in polls_per_phase[True]), polls_per_phase
    assert loss <= RATE_LOSS_MAX
