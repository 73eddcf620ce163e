"""The `iou` commands that talk to a running gateway over HTTP."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from gateway.config import ConfigError, load_client_settings
from gateway.sdk import Client, IOUError, Task
from gateway.sdk._base import segment

F = TypeVar("F", bound=Callable[..., Any])
CATEGORY_FLAGS = {"tool_calls": "tool", "llm": "llm", "commerce": "commerce"}


class Options:
    """Global options (``iou --url --token --agent --json``), shared with subcommands."""

    def __init__(self, url: str | None, token: str | None, agent: str | None,
                 as_json: bool) -> None:
        try:
            client_settings = load_client_settings()
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        self.url = (url or client_settings.url).rstrip("/")
        self._token = token or client_settings.admin_token
        self._data_dir = client_settings.data_dir
        self.agent = agent
        self.as_json = as_json
        self.console = Console(highlight=False)
        self._client: Client | None = None

    def client(self) -> Client:
        """The SDK's client with the admin token (one per command, connections kept)."""
        if self._client is None:
            self._client = Client(self.url, self._token or self._token_file())
        return self._client

    def _token_file(self) -> str:
        path = self._data_dir / "admin_token"
        if not path.exists():
            raise IOUError(f"no admin token: pass --token, set IOU_ADMIN_TOKEN, or run "
                           f"`iou serve` here so {path} exists", code="no_token")
        return path.read_text().strip()

    def agent_name(self, local: str | None) -> str:
        name = local or self.agent
        if not name:
            raise click.UsageError("this command needs --agent NAME")
        return name

    def emit(self, payload: Any, human: Callable[[], None]) -> None:
        if self.as_json:
            click.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        else:
            human()


def fail(code: str, message: str, body: dict[str, Any] | None = None) -> None:
    """Exit 1 with one line on standard error: the error object with --json, else text."""
    opts = click.get_current_context().find_object(Options)
    if opts is not None and opts.as_json:
        error = {"error": code, "message": message, **(body or {})}
        click.echo(orjson.dumps(error).decode(), err=True)
    else:
        click.echo(f"error: {code}: {message}", err=True)
    sys.exit(1)


def refusals(fn: F) -> F:
    """Exit 1 with the contract's error code when the gateway refuses or is unreachable."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IOUError as exc:
            fail(exc.code, exc.message, exc.body)

    return run  # type: ignore[return-value]


def _local_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Options).as_json = True  # type: ignore[union-attr]


agent_option = click.option("--agent", "agent", default=None, help="Agent name.")
# `--json` is global (`iou --json fund ...`) and also accepted after the subcommand.
json_option = click.option("--json", is_flag=True, expose_value=False, callback=_local_json,
                           help="Print JSON (as the global --json).")
idempotency_option = click.option(
    "--idempotency-key", default=None,
    help="Sent as Idempotency-Key: the same key repeats the first result instead of acting "
         "again (default: a new key per invocation, reused on the command's own retries).")
pass_options = click.make_pass_decorator(Options)


def register(main: click.Group) -> None:
    for command in (agents, fund, limits, shadow, status, ledger, usage, tools, freeze, unfreeze,
                    demo, refund, debit, tasks):
        main.add_command(command)


@click.group()
def agents() -> None:
    """Provision and list agents."""


@agents.command("create")
@click.argument("name")
@click.option("--grant", default=None, help="Opening balance (default IOU_SIGNUP_GRANT).")
@idempotency_option
@json_option
@pass_options
@refusals
def agents_create(opts: Options, name: str, grant: str | None,
                  idempotency_key: str | None) -> None:
    body: dict[str, Any] = {"name": name} | ({"grant": grant} if grant is not None else {})
    created = opts.client().request("POST", "/v1/agents", body,
                                    idempotency_key=idempotency_key)
    opts.emit(created, lambda: opts.console.print(
        f"created [bold]{created['agent']}[/bold] with balance {created['balance']} IOU\n"
        + _key_line(created)))


def _key_line(created: dict[str, Any]) -> str:
    if created.get("api_key"):
        return f"api key (shown once): {created['api_key']}"
    # A replayed creation: the key was in the first answer only (keys are kept as hashes).
    return "api key: not in this replayed answer; add one with POST /v1/agents/NAME/keys"


@agents.command("list")
@json_option
@pass_options
@refusals
def agents_list(opts: Options) -> None:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "1000"} | ({"cursor": cursor} if cursor else {})
        page = opts.client().request("GET", "/v1/agents", params=params)
        rows += page["agents"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    opts.emit({"agents": rows}, lambda: opts.console.print(_agents_table(rows)))


def _agents_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("agent", "balance", "held", "spent today", "frozen")
    for a in rows:
        table.add_row(a["agent"], a["balance"], a["held"], a["spent_today"],
                      "yes" if a["frozen"] else "")
    return table


@click.command()
@agent_option
@click.option("--amount", required=True, help="Tokens to add, e.g. 20 or 0.5.")
@idempotency_option
@json_option
@pass_options
@refusals
def fund(opts: Options, agent: str | None, amount: str, idempotency_key: str | None) -> None:
    """Add tokens to an agent's balance (exactly once, also when retried)."""
    name = opts.agent_name(agent)
    result = opts.client().request("POST", f"/v1/agents/{segment(name)}/fund",
                                   {"amount": amount}, idempotency_key=idempotency_key)
    opts.emit(result, lambda: opts.console.print(
        f"funded {name} with {amount}: balance {result['balance']} IOU"))


key_option = click.option(
    "--key", default=None,
    help="The agent's key (default IOU_AGENT_KEY, else the global --token).")


def _agent_client(opts: Options, key: str | None) -> Client:
    """A client acting as the agent: --key, else IOU_AGENT_KEY (read by the SDK), else the
    global token."""
    client = Client(opts.url, key)
    if client.key is None:
        client.close()
        return opts.client()
    return client


@click.group()
def tasks() -> None:
    """Tasks: budget envelopes that an agent's calls naming them count against."""


def _task_lines(task: Task) -> str:
    spent = ", ".join(f"{k} {v}" for k, v in task.spent_by_tool.items()) or "nothing"
    calls = ", ".join(f"{k} {v}" for k, v in task.calls_by_tool.items()) or "none"
    caps = ", ".join(f"{k} {v}" for k, v in task.max_calls.items())
    lines = [f"task [bold]{task.task_id}[/bold]" + (f" ({task.name})" if task.name else "")
             + f": {task.state}, expires {task.raw.get('expires_at')}",
             f"budget {task.budget} IOU: spent {task.spent}, held {task.held}, "
             f"remaining {task.remaining}",
             f"calls {task.calls}" + (f" (max_calls: {caps})" if caps else ""),
             f"spent by tool: {spent}", f"calls by tool: {calls}"]
    if task.holds_released:
        lines.append(f"holds released: {task.holds_released}")
    return "\n".join(lines)


def _max_calls(pairs: tuple[str, ...]) -> dict[str, int] | None:
    caps: dict[str, int] = {}
    for pair in pairs:
        name, sep, count = pair.partition("=")
        if not sep or not count.isascii() or not count.isdigit():
            raise click.BadParameter(f"{pair!r} is not NAME=N", param_hint="--max-calls")
        caps[name] = int(count)
    return caps or None


@tasks.command("open")
@click.option("--budget", required=True, help="The task's budget in tokens, e.g. 2.")
@click.option("--name", default=None, help="A label for the task.")
@click.option("--ttl", "ttl_s", type=int, default=None,
              help="Seconds until it expires (default 3600, at most 604800).")
@click.option("--max-calls", "max_calls", multiple=True, metavar="NAME=N",
              help="At most N calls of a tool or category (repeatable).")
@key_option
@idempotency_option
@json_option
@pass_options
@refusals
def tasks_open(  # noqa: PLR0913 - one parameter per option
        opts: Options, budget: str, name: str | None, ttl_s: int | None,
        max_calls: tuple[str, ...], key: str | None, idempotency_key: str | None) -> None:
    """Open a task; pass its id as "task" on charges and holds (invoke: X-IOU-Task)."""
    task = _agent_client(opts, key).tasks.open(budget, name=name, ttl_s=ttl_s,
                                               max_calls=_max_calls(max_calls),
                                               idempotency_key=idempotency_key)
    opts.emit(task.raw, lambda: opts.console.print(_task_lines(task)))


@tasks.command("show")
@click.argument("task_id")
@key_option
@json_option
@pass_options
@refusals
def tasks_show(opts: Options, task_id: str, key: str | None) -> None:
    """A task with its summary (spent and calls by tool and category)."""
    task = _agent_client(opts, key).tasks.get(task_id)
    opts.emit(task.raw, lambda: opts.console.print(_task_lines(task)))


@tasks.command("close")
@click.argument("task_id")
@key_option
@json_option
@pass_options
@refusals
def tasks_close(opts: Options, task_id: str, key: str | None) -> None:
    """Close a task (its open holds are released) and print its summary."""
    task = _agent_client(opts, key).tasks.close(task_id)
    opts.emit(task.raw, lambda: opts.console.print(_task_lines(task)))


@tasks.command("list")
@agent_option
@click.option("--limit", type=click.IntRange(1, 1000), default=100, help="Tasks listed.")
@key_option
@json_option
@pass_options
@refusals
def tasks_list(opts: Options, agent: str | None, limit: int, key: str | None) -> None:
    """An agent's recent tasks, newest first (the admin token, or the agent's key)."""
    name = opts.agent_name(agent)
    found = (opts.client() if key is None else _agent_client(opts, key)).tasks.list(
        name, limit=limit)

    def table() -> Table:
        rows = Table("task", "name", "state", "budget", "spent", "held", "calls", "expires")
        for t in found:
            rows.add_row(t.task_id, t.name or "", t.state, str(t.budget), str(t.spent),
                         str(t.held), str(t.calls), str(t.raw.get("expires_at")))
        return rows

    opts.emit({"agent": name, "tasks": [t.raw for t in found]},
              lambda: opts.console.print(table()))


@click.command()
@click.argument("charge_id")
@click.option("--amount", default=None, help="Tokens to give back (default: what is left).")
@click.option("--reason", default=None, help="Why, kept on the ledger row.")
@idempotency_option
@json_option
@pass_options
@refusals
def refund(opts: Options, charge_id: str, amount: str | None, reason: str | None,
           idempotency_key: str | None) -> None:
    """Refund a charge (a charge, batch item or capture id), partly or whole."""
    result = opts.client().refund(charge_id, amount, reason=reason,
                                  idempotency_key=idempotency_key)
    opts.emit(result.raw, lambda: opts.console.print(
        f"refunded {result.amount} of {charge_id} to {result.agent}: balance "
        f"{result.raw['balance']} IOU (refund {result.refund_id})"))


@click.command()
@click.argument("positional", nargs=-1, metavar="[AGENT_NAME] [AMOUNT]")
@agent_option
@click.option("--amount", "amount_option", default=None, help="Tokens to take back.")
@click.option("--reason", required=True, help="Why, kept on the ledger row.")
@idempotency_option
@json_option
@pass_options
@refusals
def debit(opts: Options, positional: tuple[str, ...], agent: str | None,
          amount_option: str | None, reason: str, idempotency_key: str | None) -> None:
    """Take tokens back from an agent's available balance: `iou debit --agent NAME --amount
    X --reason R` (as `iou fund`), or `iou debit NAME X --reason R`."""
    agent_name, amount = _agent_and_amount(opts, positional, agent, amount_option)
    result = opts.client().debit(agent_name, amount, reason=reason,
                                 idempotency_key=idempotency_key)
    opts.emit(result.raw, lambda: opts.console.print(
        f"debited {amount} from {agent_name}: balance {result.raw['balance']} IOU"))


def _agent_and_amount(opts: Options, positional: tuple[str, ...], agent: str | None,
                      amount: str | None) -> tuple[str, str]:
    """The agent and the amount of a command taking them as options (--agent, --amount, the
    global --agent) or as arguments (AGENT_NAME AMOUNT, or AMOUNT alone after --agent)."""
    given = list(positional)
    if len(given) > 2 or (len(given) == 2 and (agent or amount)):
        raise click.UsageError("give the agent and the amount once each")
    if len(given) == 2 or (given and amount is not None):
        agent = given.pop(0)
    name = opts.agent_name(agent)
    if given and amount is None:
        amount = given.pop()
    if given or amount is None:
        raise click.UsageError("this command needs an amount (--amount X)")
    return name, amount


@click.command()
@agent_option
@click.option("--per-call", default=None, help="Cap on one call.")
@click.option("--daily", default=None, help="Cap on one UTC day.")
@click.option("--tool-calls", default=None, help="Per-call cap of the tool category.")
@click.option("--llm", default=None, help="Per-call cap of the llm category.")
@click.option("--commerce", default=None, help="Per-call cap of the commerce category.")
@click.option("--category", "category_caps", multiple=True, metavar="NAME=X",
              help="Per-call cap of any category (repeatable).")
@click.option("--hourly", default=None, help="Cap on the last 60 minutes (rolling).")
@click.option("--weekly", default=None, help="Cap on one ISO week (UTC, from Monday).")
@click.option("--monthly", default=None, help="Cap on one calendar month (UTC).")
@click.option("--calls-per-minute", default=None, help="Calls a UTC minute (free ones too).")
@click.option("--calls-per-hour", default=None, help="Calls a UTC hour (free ones too).")
@click.option("--calls-per-day", default=None, help="Calls a UTC day (free ones too).")
@click.option("--tool", "tool_caps", multiple=True, metavar="TOOL:CAP=X",
              help="A tool's cap: per_call or calls_per_minute|hour|day (repeatable), e.g. "
                   "web_browse:calls_per_day=10.")
@click.option("--category-limit", "category_limits", multiple=True, metavar="CAT:CAP=X",
              help="A category's cap: per_call, daily, hourly, weekly, monthly or "
                   "calls_per_minute|hour|day (repeatable), e.g. llm:hourly=0.5.")
@click.option("--loop", "loop", default=None, metavar="N/Ws[:freeze]",
              help="Loop breaker: the same tool with the same arguments more than N times "
                   "in W seconds is refused (:freeze also freezes the agent), e.g. 5/60s; "
                   "none removes it.")
@click.option("--require-task/--no-require-task", "require_task", default=None,
              help="Paid calls must name a task (--no-require-task lifts it).")
@click.option("--low-balance", default=None, help="Warn below this balance.")
@click.option("--webhook", default=None, help="URL for balance webhooks.")
@click.option("--shadow", "shadow", is_flag=True,
              help="The caps given are shadow limits: checked on every call, never refusing "
                   "(see `iou shadow`).")
@click.option("--shadow-clear", is_flag=True, help="Remove every shadow limit.")
@json_option
@pass_options
@refusals
def limits(  # noqa: PLR0913 - click passes each of the command's options
        opts: Options, agent: str | None, per_call: str | None, daily: str | None,
        tool_calls: str | None, llm: str | None, commerce: str | None,
        category_caps: tuple[str, ...], hourly: str | None, weekly: str | None,
        monthly: str | None, calls_per_minute: str | None, calls_per_hour: str | None,
        calls_per_day: str | None, tool_caps: tuple[str, ...],
        category_limits: tuple[str, ...], loop: str | None, require_task: bool | None,
        low_balance: str | None, webhook: str | None, shadow: bool,
        shadow_clear: bool) -> None:
    """Set caps (none given: show them). "none" removes a cap."""
    name = opts.agent_name(agent)
    patch = _limits_patch(per_call, daily, low_balance, webhook,
                          {"tool_calls": tool_calls, "llm": llm, "commerce": commerce},
                          category_caps)
    for field, value in (("hourly", hourly), ("weekly", weekly), ("monthly", monthly)):
        if value is not None:
            patch[field] = _cap(value)
    calls = {f"per_{unit}": _count(value) for unit, value in (
        ("minute", calls_per_minute), ("hour", calls_per_hour), ("day", calls_per_day))
        if value is not None}
    if calls:
        patch["calls"] = calls
    _scoped_patch(patch, "tools", tool_caps)
    _scoped_patch(patch, "categories", category_limits)
    if loop is not None:
        patch["loop"] = _loop(loop)
    if require_task is not None:
        patch["require_task"] = require_task or None  # lifting it removes the limit
    if shadow and patch:
        patch = {"shadow": patch}
    if shadow_clear:
        patch["shadow"] = None
    client = opts.client()
    result = (client.request("PATCH", f"/v1/agents/{segment(name)}/limits", patch) if patch
              else client.request("GET", f"/v1/agents/{segment(name)}/limits"))
    opts.emit(result, lambda: opts.console.print(_limits_table(name, result)))


def _cap(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _count(value: str) -> int | None:
    """A call cap: a whole number of calls, or "none" to remove it."""
    if value.lower() == "none":
        return None
    if not value.isdigit() or len(value) > 10:
        raise click.UsageError(f"a call cap is a whole number of calls, not {value!r}")
    return int(value)


LOOP_SPEC_RE = re.compile(r"([0-9]{1,4})/([0-9]{1,5})s?(?::(refuse|freeze))?", re.ASCII)


def _loop(spec: str) -> dict[str, Any] | None:
    """--loop N/Ws[:freeze|:refuse] as the limits object's loop; "none" removes it (the
    gateway checks the bounds)."""
    if spec.lower() == "none":
        return None
    m = LOOP_SPEC_RE.fullmatch(spec)
    if m is None:
        raise click.UsageError(f"--loop takes N/Ws or N/Ws:freeze (e.g. 5/60s), not {spec!r}")
    return {"repeats": int(m[1]), "window_s": int(m[2]), "action": m[3] or "refuse"}


def _scoped_patch(patch: dict[str, Any], group: str, specs: tuple[str, ...]) -> None:
    """Add --tool / --category-limit caps (NAME:CAP=X) to the patch under ``group``."""
    for spec in specs:
        scope, cap, value = _scoped_cap(spec, group == "categories")
        entry = patch.setdefault(group, {}).setdefault(scope, {})
        if cap.startswith("calls_"):
            entry.setdefault("calls", {})[cap.removeprefix("calls_")] = _count(value)
        else:
            entry[cap] = _cap(value)


SCOPED_CAPS = {"per_call", "calls_per_minute", "calls_per_hour", "calls_per_day"}
CATEGORY_ONLY_CAPS = {"daily", "hourly", "weekly", "monthly"}


def _scoped_cap(spec: str, category: bool) -> tuple[str, str, str]:
    """NAME:CAP=X of --tool and --category-limit, checked."""
    scope, _, rest = spec.partition(":")
    cap, sep, value = rest.partition("=")
    allowed = SCOPED_CAPS | (CATEGORY_ONLY_CAPS if category else set())
    if not scope or not sep or cap not in allowed:
        raise click.UsageError(f"expected NAME:CAP=X with CAP one of {', '.join(sorted(allowed))}"
                               f", not {spec!r}")
    return scope, cap, value


def _limits_patch(per_call: str | None, daily: str | None, low_balance: str | None,
                  webhook: str | None, flags: dict[str, str | None],
                  category_caps: tuple[str, ...]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for field, value in (("per_call", per_call), ("daily", daily),
                         ("low_balance", low_balance), ("webhook_url", webhook)):
        if value is not None:
            patch[field] = _cap(value)
    categories: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is not None:
            categories[CATEGORY_FLAGS[flag]] = {"per_call": _cap(value)}
    for item in category_caps:
        cat, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--category takes NAME=X, not {item!r}")
        categories[cat] = {"per_call": _cap(value)}
    if categories:
        patch["categories"] = categories
    return patch


def _limits_table(name: str, lim: dict[str, Any]) -> Table:
    table = Table("limit", "value", title=f"limits of {name}")
    for field in ("per_call", "daily", "hourly", "weekly", "monthly", "low_balance",
                  "webhook_url"):
        table.add_row(field, lim.get(field) or "-")
    for field, value in _flat(lim.get("calls", {}), "calls."):
        table.add_row(field, value)
    if lim.get("require_task"):
        table.add_row("require_task", "yes")
    loop = lim.get("loop")
    if loop:
        table.add_row("loop", f"{loop['repeats']} calls / {loop['window_s']} s, "
                              f"{loop['action']}")
    for group in ("categories", "tools"):
        for field, value in _flat(lim.get(group, {}), ""):
            table.add_row(field, value)
    for field, value in _flat(lim.get("shadow") or {}, "shadow."):
        if value not in ("None", "{}"):
            table.add_row(field, value)
    return table


@click.command()
@click.argument("agent_name", required=False)
@agent_option
@json_option
@pass_options
@refusals
def shadow(opts: Options, agent_name: str | None, agent: str | None) -> None:
    """What AGENT's shadow limits would have refused, by limit (count and amount)."""
    name = opts.agent_name(agent_name or agent)
    result = opts.client().shadow(name)

    def table() -> Table:
        out = Table("limit", "calls", "amount", title=f"shadow refusals of {name}")
        for limit, row in result["refusals"].items():
            out.add_row(limit, str(row["count"]), row["amount"])
        out.add_row("total", str(result["total"]["count"]), result["total"]["amount"])
        return out

    opts.emit(result, lambda: opts.console.print(table()))


def _flat(tree: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    """Nested caps as dotted names (llm.calls.per_day) and their values."""
    rows: list[tuple[str, str]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((prefix + key, str(value)))
    return rows


@click.command()
@agent_option
@json_option
@pass_options
@refusals
def status(opts: Options, agent: str | None) -> None:
    """Balance, held, spent today, limits and the price list (all agents without --agent)."""
    client = opts.client()
    prices = client.request("GET", "/v1/tools")["tools"]
    name = agent or opts.agent
    if name is None:
        rows = client.request("GET", "/v1/agents", params={"limit": "1000"})["agents"]
        opts.emit({"agents": rows, "tools": prices}, lambda: _print_overview(opts, rows, prices))
        return
    detail = client.request("GET", f"/v1/agents/{segment(name)}")
    opts.emit({"agent": detail, "tools": prices},
              lambda: _print_status(opts, detail, prices))


def _print_overview(opts: Options, rows: list[dict[str, Any]], prices: list[Any]) -> None:
    opts.console.print(_agents_table(rows))
    opts.console.print(_prices_table(prices))


def _print_status(opts: Options, d: dict[str, Any], prices: list[dict[str, Any]]) -> None:
    low = "[bold red] LOW BALANCE[/bold red]" if "low_balance" in d["warnings"] else ""
    frozen = "  [bold]FROZEN[/bold]" if d["frozen"] else ""
    opts.console.print(f"[bold]{d['agent']}[/bold]  balance {d['balance']} IOU{low}{frozen}")
    opts.console.print(f"held {d['held']}  spent today {d['spent_today']}")
    lim = d["limits"]
    table = Table("cap", "spent today", "limit", title="daily caps")
    table.add_row("all calls", d["spent_today"], lim.get("daily") or "-")
    for cat, caps in lim.get("categories", {}).items():
        if "daily" in caps:
            spent = d.get("spent_today_by_category", {}).get(cat, "0")
            table.add_row(cat, spent, caps["daily"])
    opts.console.print(table)
    opts.console.print(_limits_table(d["agent"], lim))
    opts.console.print(_prices_table(prices))


def _prices_table(prices: list[dict[str, Any]]) -> Table:
    table = Table("tool", "price per call", "category", "pricing", title="price list")
    for t in prices:
        table.add_row(t["tool"], t["price"], t["category"], t["pricing"])
    return table


@click.command()
@agent_option
@click.option("--limit", "count", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--csv", "as_csv", is_flag=True, help="CSV on standard output.")
@json_option
@pass_options
@refusals
def ledger(opts: Options, agent: str | None, count: int, as_csv: bool) -> None:
    """The per-call ledger of an agent, newest first.

    \b
    amount: + funded or granted, - spent (a charge, a capture's cost); sums to
            funded - spent.
    held:   + set aside by a hold, - the hold closed (a capture's whole hold, a
            release, an expiry); sums to what is still held.
    balance after = sum(amount) - sum(held), over the whole ledger."""
    name = opts.agent_name(agent)
    if as_csv and opts.as_json:
        raise click.UsageError("--csv and --json exclude each other")
    page = opts.client().request("GET", f"/v1/agents/{segment(name)}/ledger",
                                 params={"limit": str(count)})
    if as_csv:
        _print_csv(page["entries"])
        return
    opts.emit(page, lambda: opts.console.print(_ledger_table(name, page["entries"])))


# The text table and the CSV show the same two signed columns, so that neither a hold nor
# its capture looks like a second charge:
#   amount: what the entry did to the agent's money: + funded or granted, - spent (a charge,
#           a capture's cost). Its sum is funded - spent.
#   held:   what it did to the money set aside: + a hold, - the hold closing (a capture's
#           whole hold, its cost included, or a release or expiry). Its sum is still held.
# So balance = sum(amount) - sum(held), and the spend is the sum of the negative amounts.
LEDGER_NOTE = ("amount: + funded, - spent (sums to funded - spent); held: + set aside by a "
               "hold, - the hold closed (captured, released or expired)")
MONEY_IN = frozenset({"grant", "fund", "refund", "transfer_in"})
MONEY_OUT = frozenset({"charge", "capture", "debit", "transfer_out"})
HOLD_CLOSED = frozenset({"release", "expire"})
LEDGER_FIELDS = ("entry_id", "at", "kind", "tool", "category", "amount", "held",
                 "balance_after", "idempotency_key", "hold_id")


def _signed(sign: str, amount: str | None) -> str:
    if amount is None:
        return ""
    return amount if amount == "0" else sign + amount


def ledger_columns(entry: dict[str, Any]) -> tuple[str, str]:
    """The entry's signed (amount, held) columns, as described above."""
    kind, amount = entry["kind"], entry.get("amount")
    if kind in MONEY_IN:
        return _signed("+", amount), ""
    if kind == "capture":
        return _signed("-", amount), _signed("-", entry.get("held"))
    if kind in MONEY_OUT:
        return _signed("-", amount), ""
    if kind == "hold":
        return "", _signed("+", amount)
    if kind in HOLD_CLOSED:
        return "", _signed("-", amount)
    return amount or "", ""


def _print_csv(entries: list[dict[str, Any]]) -> None:
    out = csv.writer(sys.stdout)
    out.writerow(LEDGER_FIELDS)
    for e in entries:
        amount, held = ledger_columns(e)
        signed = {"amount": amount, "held": held}
        out.writerow([signed[f] if f in signed else "" if e.get(f) is None else e[f]
                      for f in LEDGER_FIELDS])


@click.command()
@agent_option
@click.option("--by", type=click.Choice(["tool", "category"]), default="tool",
              show_default=True, help="Group the spending by tool or by category.")
@click.option("--period", type=click.Choice(["hour", "day"]), default="hour",
              show_default=True, help="One row per UTC hour or UTC day.")
@click.option("--since", default=None,
              help="Start, ISO 8601 UTC (2026-11-29T10:00:00Z) or a date (default: 24 hours "
                   "before --until for hours, 30 days for days).")
@click.option("--until", default=None, help="End, as --since (default: now).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on standard output.")
@json_option
@pass_options
@refusals
def usage(  # noqa: PLR0913 - click passes each of the command's options
        opts: Options, agent: str | None, by: str, period: str, since: str | None,
        until: str | None, as_csv: bool) -> None:
    """What was spent, per hour or day and per tool or category, from the ledger: one
    agent's with --agent, else every agent's together (admin)."""
    if as_csv and opts.as_json:
        raise click.UsageError("--csv and --json exclude each other")
    name = agent or opts.agent
    params = {"by": by, "period": period,
              **({"since": since} if since else {}), **({"until": until} if until else {})}
    path = f"/v1/agents/{segment(name)}/usage" if name else "/v1/usage"
    report = opts.client().request("GET", path, params=params)
    if as_csv:
        out = csv.writer(sys.stdout)
        out.writerow(("start", by, "calls", "amount"))
        for row in report["rows"]:
            out.writerow((row["start"], row[by], row["calls"], row["amount"]))
        return
    opts.emit(report, lambda: opts.console.print(_usage_table(report)))


def _usage_table(report: dict[str, Any]) -> Table:
    by = report["by"]
    who = report["agent"] or "all agents"
    table = Table(report["period"], by, "calls", "amount",
                  title=f"usage of {who}, {report['since']} to {report['until']}")
    for row in report["rows"]:
        table.add_row(row["start"], row[by], str(row["calls"]), row["amount"])
    total = report["total"]
    table.add_row("total", "", str(total["calls"]), total["amount"], style="bold")
    return table


def _ledger_table(name: str, entries: list[dict[str, Any]]) -> Table:
    table = Table("at", "kind", "tool", "amount", "held", "balance after",
                  title=f"ledger of {name}", caption=LEDGER_NOTE)
    for e in entries:
        amount, held = ledger_columns(e)
        table.add_row(e["at"], e["kind"], e.get("tool") or "", amount, held,
                      e.get("balance_after") or "")
    return table


@click.group()
def tools() -> None:
    """The price catalog."""


@tools.command("set")
@click.argument("name")
@click.option("--price", required=True)
@click.option("--category", required=True)
@click.option("--variable", is_flag=True, help="Priced per call by the caller (via a hold).")
@click.option("--upstream", default=None, help="URL the gateway proxies invoke calls to.")
@json_option
@pass_options
@refusals
def tools_set(opts: Options, name: str, price: str, category: str, variable: bool,
              upstream: str | None) -> None:
    body: dict[str, Any] = {"price": price, "category": category,
                            "pricing": "variable" if variable else "fixed"}
    if upstream:
        body["upstream"] = upstream
    tool = opts.client().request("PUT", f"/v1/tools/{segment(name)}", body)
    opts.emit(tool, lambda: opts.console.print(
        f"{tool['tool']}: {tool['price']} per call ({tool['category']}, {tool['pricing']})"))


@tools.command("list")
@json_option
@pass_options
@refusals
def tools_list(opts: Options) -> None:
    prices = opts.client().request("GET", "/v1/tools")
    opts.emit(prices, lambda: opts.console.print(_prices_table(prices["tools"])))


def _freeze_command(frozen: bool) -> click.Command:
    verb = "freeze" if frozen else "unfreeze"

    @click.command(verb, help=f"{verb.capitalize()} an agent (frozen agents make no paid calls).")
    @agent_option
    @idempotency_option
    @json_option
    @pass_options
    @refusals
    def command(opts: Options, agent: str | None, idempotency_key: str | None) -> None:
        name = opts.agent_name(agent)
        result = opts.client().request("POST", f"/v1/agents/{segment(name)}/{verb}",
                                       idempotency_key=idempotency_key)
        opts.emit(result, lambda: opts.console.print(f"{name}: frozen={result['frozen']}"))

    return command


freeze = _freeze_command(True)
unfreeze = _freeze_command(False)


@click.command()
@json_option
@pass_options
@refusals
def demo(opts: Options) -> None:
    """Provision a demo agent and play the seed scenario, printing every call."""
    from gateway.cli.demo import run_demo

    # With --json the calls are in the one JSON document printed at the end, not as lines.
    result = run_demo(opts.client(), (lambda _line: None) if opts.as_json else click.echo)
    opts.emit(result, lambda: None)
