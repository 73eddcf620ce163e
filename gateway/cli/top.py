"""`iou top`: the agents spending most now, refreshed in place (like top(1)), from the API.

Each refresh asks for one bounded page: GET /v1/summary sorted by today's spending (served
from each worker's table, never a scan of every agent per request), or on a gateway without
that route the first page of GET /v1/agents. Spend per minute is the growth of an agent's
spent_today between two refreshes; refusals per minute (by code, all agents: no metric has a
per-agent label) come from /metrics. ``--once`` takes two samples ``--interval`` apart and
prints one frame.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.metering.money import format_amount, parse_amount
from gateway.sdk.errors import IOUError

FETCH_ROWS_MAX = 1000  # the API's page bound: one request per refresh
POLL_S = 0.25
NEWER_WAIT_S = 30.0  # a large store's summary table is rebuilt about every 25 s
MICROS_PER_TOKEN = 1_000_000
_REFUSED = re.compile(r'^iou_charges_total\{([^}]*)\} (\S+)$', re.MULTILINE)
_OUTCOME = re.compile(r'outcome="([^"]*)"')


@dataclass(frozen=True)
class Agent:
    name: str
    spent_today_micros: int
    balance_micros: int
    held_micros: int
    frozen: bool


@dataclass(frozen=True)
class Sample:
    at_s: float  # when the figures were read (Unix seconds): the summary's as_of
    agents: dict[str, Agent]
    refused: dict[str, float]  # charge refusals so far, by outcome (from /metrics)


@dataclass(frozen=True)
class Row:
    agent: Agent
    spend_per_min_micros: int


def _micros(value: Any) -> int:
    return parse_amount(str(value or "0"), allow_zero=True) if value is not None else 0


def _agent(row: dict[str, Any]) -> Agent:
    return Agent(row["agent"], _micros(row.get("spent_today")), _micros(row.get("balance")),
                 _micros(row.get("held")), bool(row.get("frozen")))


def fetch_agents(request: Callable[..., Any], rows_max: int) -> tuple[float, dict[str, Agent]]:
    """(when the figures were read, one bounded page of agents): the top spenders of today
    first when the gateway can sort (GET /v1/summary, figures as of its ``as_of``: its table
    is rebuilt in the background), else the first page of GET /v1/agents (read now)."""
    params = {"sort": "spent_today", "order": "desc", "limit": str(rows_max)}
    try:
        page = request("GET", "/v1/summary", params=params)
        at_s = _unix_s(page["as_of"]) if page.get("as_of") else time.time()
        rows = page["agents"]
    except IOUError as exc:
        if exc.code != "not_found":
            raise
        at_s = time.time()
        rows = request("GET", "/v1/agents", params={"limit": str(rows_max)})["agents"]
    return at_s, {r["agent"]: _agent(r) for r in rows}


def _unix_s(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def refusals_of(metrics_text: str) -> dict[str, float]:
    """Charge refusals so far by outcome (iou_charges_total, every category summed)."""
    totals: dict[str, float] = {}
    for labels, value in _REFUSED.findall(metrics_text):
        outcome = _OUTCOME.search(labels)
        if outcome and outcome.group(1) != "ok":
            totals[outcome.group(1)] = totals.get(outcome.group(1), 0.0) + float(value)
    return totals


def take_sample(request: Callable[..., Any], url: str, rows_max: int) -> Sample:
    at_s, agents = fetch_agents(request, rows_max)
    try:
        refused = refusals_of(httpx.get(url + "/metrics", timeout=10).text)
    except httpx.HTTPError:
        refused = {}
    return Sample(at_s, agents, refused)


def next_sample(request: Callable[..., Any], url: str, rows_max: int, before: Sample,
                interval_s: float) -> Sample:
    """A sample newer than ``before``, ``interval_s`` later: the summary may answer the same
    table again until its rebuild, so ask again (every POLL_S, for at most NEWER_WAIT_S)."""
    time.sleep(interval_s)
    deadline = time.monotonic() + max(NEWER_WAIT_S, interval_s)
    sample = take_sample(request, url, rows_max)
    while sample.at_s <= before.at_s and time.monotonic() < deadline:
        time.sleep(POLL_S)
        sample = take_sample(request, url, rows_max)
    return sample


def rank(before: Sample, after: Sample, top_n: int) -> list[Row]:
    """The agents of ``after`` by spend per minute since ``before`` (then by today's)."""
    elapsed_s = max(after.at_s - before.at_s, 1e-3)
    rows = []
    for name, now in after.agents.items():
        then = before.agents.get(name)
        # A new UTC day resets spent_today: what was spent since midnight is the growth.
        grown = now.spent_today_micros - (then.spent_today_micros if then else 0)
        if grown < 0:
            grown = now.spent_today_micros
        rows.append(Row(now, int(grown * 60 / elapsed_s)))
    rows.sort(key=lambda r: (-r.spend_per_min_micros, -r.agent.spent_today_micros,
                             r.agent.name))
    return rows[:top_n]


def refusals_per_min(before: Sample, after: Sample) -> dict[str, float]:
    elapsed_s = max(after.at_s - before.at_s, 1e-3)
    rates = {k: (v - before.refused.get(k, 0.0)) * 60 / elapsed_s
             for k, v in after.refused.items()}
    return {k: v for k, v in sorted(rates.items()) if v > 0}


def render(rows: list[Row], refusals: dict[str, float], url: str, interval_s: float
           ) -> Group:
    header = Text(f"iou top — {url} — every {interval_s:g} s — "
                  f"{time.strftime('%H:%M:%S', time.gmtime())} UTC", style="bold")
    refused = ", ".join(f"{k} {v:.0f}/min" for k, v in refusals.items()) or "none"
    table = Table(box=None, pad_edge=False)
    for name, justify in [("AGENT", "left"), ("SPEND/MIN", "right"), ("SPENT TODAY", "right"),
                          ("BALANCE", "right"), ("HELD", "right"), ("", "left")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        a = row.agent
        table.add_row(a.name, format_amount(row.spend_per_min_micros),
                      format_amount(a.spent_today_micros), format_amount(a.balance_micros),
                      format_amount(a.held_micros), "frozen" if a.frozen else "")
    return Group(header, Text(f"refusals (all agents): {refused}"), table)


def run_top(request: Callable[..., Any], url: str, console: Console, once: bool,
            interval_s: float, top_n: int) -> None:
    """Print one frame (``once``) or refresh in place until Ctrl-C."""
    rows_max = min(max(top_n * 5, 100), FETCH_ROWS_MAX)
    before = take_sample(request, url, rows_max)
    after = next_sample(request, url, rows_max, before, interval_s)
    frame = render(rank(before, after, top_n), refusals_per_min(before, after), url,
                   interval_s)
    if once:
        console.print(frame)
        return
    with Live(frame, console=console, screen=False, auto_refresh=False) as live:
        try:
            while True:
                before, after = after, next_sample(request, url, rows_max, after, interval_s)
                live.update(render(rank(before, after, top_n), refusals_per_min(before, after),
                                   url, interval_s), refresh=True)
        except KeyboardInterrupt:
            return
