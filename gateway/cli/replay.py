"""``iou replay``'s file and output: the proposed limits file read into the engine's limit
changes (the same parser as PATCH /v1/agents/{agent}/limits), and the report printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gateway.api.body import parse_json_object
from gateway.api.limits_body import limit_changes
from gateway.ledger.replay import Proposed, ReplayError, ReplayResult
from gateway.metering.errors import InvalidRequest, MalformedJson
from gateway.metering.limits import check_name

WRAPPER_FIELDS = frozenset({"default", "agents"})


def load_proposed(path: Path, amount_max_micros: int) -> Proposed:
    """FILE: a limits object for every agent, or ``{"default": {...}, "agents": {"<name>":
    {...}}}`` (an agent's object is merged over the default; ``null`` removes a default
    limit). Raises ReplayError with one sentence naming what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReplayError(f"--limits {path}: {exc.strerror or exc}") from None
    try:
        # The API's own parser: numbers stay their literal text (amounts never pass
        # through a float) and a repeated key is refused.
        body = parse_json_object(raw)
    except MalformedJson as exc:
        raise ReplayError(f"--limits {path}: not one JSON object ({exc.message}); it must "
                          'be a limits object, or {"default": ..., "agents": ...}') from None
    except InvalidRequest as exc:
        raise ReplayError(f"--limits {path}: {exc.message}") from None
    try:
        if body and set(body) <= WRAPPER_FIELDS:
            return _wrapped(body, amount_max_micros)
        return Proposed(limit_changes(body, amount_max_micros))
    except InvalidRequest as exc:
        raise ReplayError(f"--limits {path}: {exc.message}") from None


def _wrapped(body: dict[str, Any], amount_max_micros: int) -> Proposed:
    default = body.get("default", {})
    agents = body.get("agents", {})
    if not isinstance(default, dict):
        raise InvalidRequest("default", "must be a limits object")
    if not isinstance(agents, dict):
        raise InvalidRequest("agents", "must be an object of limits objects by agent name")
    by_agent = {}
    for name, limits in agents.items():
        check_name("agents", name)
        if not isinstance(limits, dict):
            raise InvalidRequest(f"agents.{name}", "must be a limits object")
        by_agent[name] = limit_changes(limits, amount_max_micros)
    return Proposed(limit_changes(default, amount_max_micros), by_agent)


def print_report(result: ReplayResult) -> None:
    """One line per agent: refused count and amount, then each limit's share."""
    width = max([len(a.agent) for a in result.agents] + [5])
    click.echo(f"{'agent':<{width}}  refused  amount      by limit")
    for report in result.agents:
        parts = ", ".join(f"{name} {t.count} ({t.as_json()['amount']})"
                          for name, t in sorted(report.by_limit.items()))
        refused = report.refused.as_json()
        click.echo(f"{report.agent:<{width}}  {refused['count']:>7}  {refused['amount']:<10}"
                   f"  {parts or '-'}")
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    click.echo(f"replayed {result.rows} ledger rows in {result.seconds:.1f} s "
               f"({rate:,.0f} rows/s); the live store was not touched")
