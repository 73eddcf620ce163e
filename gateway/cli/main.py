"""The ``iou`` command line."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from gateway.cli.commands import Options, agent_option, fail, json_option, refusals, register
from gateway.config import (
    ConfigError,
    Settings,
    hand_down_embedded_attach,
    hand_down_metrics_dir,
    load_settings,
)
from gateway.ledger.factory import ledger_shown
from gateway.ledger.supervisor import NICENESS, WriterSupervisor
from gateway.logs import logging_config, setup_logging
from gateway.metering.secrets_store import check_at_start, ensure_secret
from gateway.store.embedded import EmbeddedSupervisor, start_embedded
from gateway.store.errors import StoreUnavailable as RedisUnavailable

log = logging.getLogger("iou.serve")
DEFAULT_URL = "http://127.0.0.1:8080"  # the CLI's --url default (IOU_URL unset)
WRITER_NICENESS = NICENESS  # added to the ledger writer child's nice value by `iou serve`
# Allocations between two young-generation collections in a gateway worker (CPython's
# default is 700). A request allocates a few dozen containers and 64 requests are in flight
# at saturation, so the default re-scanned the live ones every few requests:
# gc_collect_main was ~5 % of a worker's CPU in a py-spy profile. Request garbage is freed
# by reference counting anyway.
GC_YOUNG_THRESHOLD = 20_000


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"iou: {exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", default=None, help="Gateway URL (env IOU_URL, default "
              "http://127.0.0.1:8080).")
@click.option("--token", default=None, help="Admin token (env IOU_ADMIN_TOKEN, else "
              "IOU_DATA_DIR/admin_token).")
@click.option("--agent", default=None, help="Agent name (also accepted after the subcommand).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None, agent: str | None,
         as_json: bool) -> None:
    """IOU gateway: pre-funded balances that cap what AI agents can spend."""
    ctx.obj = Options(url, token, agent, as_json)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--no-writer", is_flag=True, help="Run no ledger writer here (run `iou writer`).")
def serve(host: str, port: int, workers: int, no_writer: bool) -> None:
    """Run the gateway (and, with no IOU_REDIS_URL, its private Redis under IOU_DATA_DIR)."""
    import uvicorn

    from gateway.api.http_protocol import GatewayHttpProtocol

    settings = _settings()
    setup_logging(settings.log_format)
    _refuse_a_port_in_use(host, port)  # before anything starts or says it did
    embedded = start_embedded(settings.data_dir) if settings.uses_embedded_redis else None
    watch = None if embedded is None else EmbeddedSupervisor(settings.data_dir, embedded)
    if embedded is not None:
        hand_down_embedded_attach()  # this process starts it again, never a child of it
    if settings.admin_token is None:
        ensure_secret(settings.data_dir, "admin_token")
        log.info("admin token: %s", (settings.data_dir / "admin_token").resolve())
    if settings.webhook_secret is None:
        ensure_secret(settings.data_dir, "webhook_secret")
    check_at_start(settings)  # before the workers: they must all read one IOU_SECRET_KEY
    if workers > 1:
        _prometheus_multiprocess(settings.data_dir / "metrics")
    redis_url = embedded.url if embedded is not None else settings.redis_url
    assert redis_url is not None
    _settle_store(settings)
    # One consumer name per host and port, kept across restarts of the writer and of `iou
    # serve`: a new writer resumes the entries its killed predecessor read but had not
    # committed at once, instead of waiting for them to be claimed as stale (30 s).
    consumer = f"{socket.gethostname()}-serve-{port}"
    writer = None if no_writer else WriterSupervisor(
        [sys.executable, "-m", "gateway.cli.main", "writer", "--consumer", consumer,
         "--parent-pid", str(os.getpid())], redis_url)
    # uvicorn shuts down on SIGTERM and then raises the signal again under the handler it
    # found: make that one exit through `finally`, so the writer and Redis are stopped too
    # (set before the writer starts: a SIGTERM in between would orphan it).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if watch is not None:
            watch.start()
        if writer is not None:
            writer.start()
        log.info("IOU gateway on http://%s:%d (%d worker(s)); ledger: %s", host, port,
                 workers, ledger_shown(settings))
        _print_next_steps(host, port)
        uvicorn.run("gateway.cli.main:serve_app", factory=True, host=host, port=port,
                    workers=workers, loop="uvloop", http=GatewayHttpProtocol, ws="none",
                    access_log=False, log_level="warning",
                    log_config=logging_config(settings.log_format), lifespan="on",
                    proxy_headers=False,
                    server_header=False, date_header=False,
                    # Per worker; head/body timeouts are the protocol's (IOU_*_TIMEOUT_S).
                    limit_concurrency=settings.connections_max,
                    timeout_keep_alive=settings.keepalive_timeout_s)
    finally:
        if writer is not None:
            writer.stop()  # SIGTERM: it finishes the batch in hand
        if watch is not None:
            embedded = watch.stop()  # the server it may have started again
        if embedded is not None:
            embedded.stop()


def serve_app() -> Any:
    """The ASGI app of one `iou serve` worker (uvicorn's factory, called once per worker
    process). The process is the server's alone, so it tunes the process-wide collector
    here, not in the app factory that tests call many times in one process."""
    from gateway.api.app import create_app

    app = create_app()
    _settle_gc()
    return app


def _settle_gc() -> None:
    """Move what start-up built (modules, routes) out of the collector's sight (a frozen
    object is never scanned again) and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
def _refuse_a_port_in_use(host: str, port: int) -> None:
    """Exit with one line when ``host:port`` cannot be bound (another server holds it), as
    uvicorn would only say after the private Redis and the writer had started."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As uvicorn binds: a port left in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else (
            f"cannot be used ({exc.strerror or exc})")
        click.echo(f"iou serve: port {port} on {host} {reason}; stop what holds it or pick "
                   "another with --port.", err=True)
        sys.exit(1)


def _print_next_steps(host: str, port: int) -> None:
    """Where the dashboard is and the next command to try (with IOU_URL when the CLI's
    default URL would not reach this gateway)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{shown}:{port}" if ":" not in shown else f"http://[{shown}]:{port}"
    log.info("Dashboard: %s/dashboard", url)
    prefix = "" if url == DEFAULT_URL else f"IOU_URL={url} "
    log.info("Next, in another terminal: %siou demo", prefix)


def _settle_store(settings: Settings) -> None:
    """Identity of a new store; the embedded default's wiped store rebuilt from the ledger."""
    from gateway.ledger.service import settle_store
    from gateway.metering.errors import GatewayError
    from gateway.runtime import redis_address

    try:
        asyncio.run(settle_store(settings))
    except GatewayError as exc:  # Redis down: the workers say so and keep checking
        log.warning("cannot check the store at start: %s", exc.message)
    except RedisUnavailable:  # started before its Redis: the workers answer 503 till it is up
        log.warning("Redis at %s is unreachable at start; paid calls get 503 until it is up",
                    redis_address(settings))


@contextmanager
def _store_errors(settings: Settings) -> Iterator[None]:
    """One line, exit 1, instead of a traceback when Redis or the ledger is out of reach."""
    from gateway.ledger.store import StoreUnavailable as LedgerUnavailable
    from gateway.runtime import redis_address

    try:
        yield
    except RedisUnavailable:
        fail("unavailable", f"Redis at {redis_address(settings)} is unreachable or not "
             "accepting writes; start it, or point IOU_REDIS_URL at it")
    except LedgerUnavailable as exc:
        fail("unavailable", f"the ledger cannot be reached ({exc}); start its database, or "
             "fix IOU_LEDGER_URL")


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _prometheus_multiprocess(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    hand_down_metrics_dir(folder)


@main.command()
@click.option("--consumer", default=None,
              help="Consumer name; a restarted writer with the same name resumes its pending "
                   "entries at once (default: host-pid).")
@click.option("--parent-pid", type=int, default=None, hidden=True,
              help="Stop when this process is gone (set by `iou serve` for its writer).")
def writer(consumer: str | None, parent_pid: int | None) -> None:
    """Run one ledger writer (stream -> ledger table) until SIGTERM."""
    import uvloop

    from gateway.ledger.service import run_writer

    settings = _settings()
    setup_logging(settings.log_format)
    from gateway.runtime import StartAbandoned

    # uvloop, as in the gateway: the writer's time is mostly socket and loop overhead.
    try:
        uvloop.run(run_writer(settings, consumer, parent_pid))
    except StartAbandoned as exc:  # stopped before its Redis ever answered: nothing to do
        log.warning("ledger writer %s", exc)


@main.command()
@json_option
@click.pass_obj
def reconcile(opts: Options) -> None:
    """Drain the streams, then compare every balance with the ledger (exit 1 on drift)."""
    from gateway.ledger.service import run_reconcile
    from gateway.metering.money import format_amount

    def amount(micros: int | None) -> str | None:
        return None if micros is None else format_amount(micros)

    settings = _settings()
    with _store_errors(settings):
        checked, drift = asyncio.run(run_reconcile(settings))
    rows = [{"agent": d.agent, "redis": amount(d.redis_micros),
             "ledger": amount(d.ledger_micros)} for d in drift]
    opts.emit({"checked": checked, "clean": not drift, "drift": rows},
              lambda: _print_reconcile(checked, rows))
    if drift:
        sys.exit(1)


def _print_reconcile(checked: int, rows: list[dict[str, str | None]]) -> None:
    for row in rows:
        click.echo(f"DRIFT {row['agent']}: redis {row['redis'] or 'missing'}, "
                   f"ledger {row['ledger'] or 'missing'}")
    click.echo(f"{len(rows)} of {checked} agents drift" if rows
               else f"reconciled {checked} agents: clean")


@main.group()
def receipt() -> None:
    """Payment receipts signed by the gateway."""


@receipt.command("verify")
@click.argument("token")
@json_option
@click.pass_obj
def receipt_verify(opts: Options, token: str) -> None:
    """Check TOKEN against the public keys of the gateway at --url / IOU_URL (exit 1 when
    the signature is bad or a claim was altered)."""
    from gateway.sdk import Client, IOUError, ReceiptInvalid

    with Client(opts.url) as client:  # /v1/receipts/keys takes no token
        try:
            claims = client.verify_receipt(token)
        except ReceiptInvalid as exc:
            fail("receipt_invalid", f"The receipt does not verify: {exc}.")
            return
        except IOUError as exc:
            fail(exc.code, exc.message)
            return
    opts.emit({"valid": True, "claims": claims}, lambda: click.echo(
        f"valid receipt: {claims['agent']} paid {claims['cost']} for {claims['tool']} "
        f"(charge {claims['charge_id']}, balance after {claims['balance_after']}, "
        f"at {claims['at']}" + (f", task {claims['task']})" if claims.get("task") else ")")))


# What recomputing the chains cannot show: a stream gone whole, head record included.
VERIFY_BLIND_SPOT = ("a stream deleted together with its head record leaves nothing to "
                     "recompute: compare these heads with heads published earlier (GET "
                     "/v1/ledger/heads) to catch it")


@main.command()
@json_option
@click.pass_obj
def verify(opts: Options) -> None:
    """Recompute the ledger's hash chains; name the first row changed, removed or inserted
    (exit 1), and print each partition's head hash to publish elsewhere."""
    from gateway.ledger.service import run_verify

    settings = _settings()
    with _store_errors(settings):
        reports = asyncio.run(run_verify(settings))
    intact = all(r.problem is None for r in reports)
    opts.emit({"intact": intact, "chains": [r.as_json() for r in reports],
               "cannot_see": VERIFY_BLIND_SPOT},
              lambda: _print_verify(reports, intact))
    if not intact:
        sys.exit(1)


@main.command()
@click.option("--limits", "limits_file", required=True, type=click.Path(path_type=Path),
              help="Proposed limits: a limits object for every agent, or "
                   '{"default": {...}, "agents": {"<name>": {...}}}.')
@agent_option
@click.option("--since", default=None, help="Replay from this far back (7d, 12h, 30m) or "
              "from an ISO 8601 date; the default is the whole ledger.")
@json_option
@click.pass_obj
def replay(opts: Options, limits_file: Path, agent: str | None, since: str | None) -> None:
    """Run the ledger's history again under proposed limits, on a scratch Redis (never the
    live one), and print per agent what they would have refused, by limit."""
    import time

    from gateway.cli.replay import load_proposed, print_report
    from gateway.ledger.replay import ReplayError, parse_since, run_replay

    settings = _settings()
    try:
        proposed = load_proposed(limits_file, settings.amount_max_micros)
        since_ms = None if since is None else parse_since(since, int(time.time() * 1000))
    except ReplayError as exc:
        click.echo(f"iou: replay: {exc}", err=True)
        sys.exit(2)
    with _store_errors(settings):
        try:
            result = asyncio.run(run_replay(settings, proposed, agent or opts.agent,
                                            since_ms))
        except ReplayError as exc:
            fail("replay_failed", str(exc))
            return
    opts.emit(result.as_json(), lambda: print_report(result))


def _print_verify(reports: list[Any], intact: bool) -> None:
    for r in reports:
        click.echo(f"{r.stream}  head {r.head.hash}  {r.checked} rows"
                   + (f", {r.unsealed} not sealed yet" if r.unsealed else ""))
    for r in reports:
        if r.problem is not None:
            click.echo(f"ALTERED {r.stream}: entry {r.problem.entry_id} {r.problem.kind}: "
                       f"{r.problem.detail}")
    rows = sum(r.checked for r in reports)
    click.echo(f"ledger intact: {rows} rows in {len(reports)} chains" if intact
               else "ledger altered")
    click.echo(f"note: {VERIFY_BLIND_SPOT}")


@main.command()
@click.option("--force", is_flag=True, help="Overwrite agents already in Redis.")
@json_option
@click.pass_obj
def recover(opts: Options, force: bool) -> None:
    """Rebuild Redis (balances, holds, windows, limits, keys, tools) from the ledger."""
    from gateway.ledger.recover import NotEmpty
    from gateway.ledger.service import run_recover

    settings = _settings()
    try:
        with _store_errors(settings):
            done = asyncio.run(run_recover(settings, force))
    except NotEmpty as exc:
        fail("not_empty", str(exc))
        return
    counts = {"agents": done.agents, "keys": done.keys, "tools": done.tools,
              "holds": done.holds, "idempotency_records": done.idempotency_records}
    opts.emit(counts, lambda: click.echo(
        f"recovered {done.agents} agents, {done.keys} keys, {done.tools} tools, "
        f"{done.holds} open holds, {done.idempotency_records} idempotency records"))


@main.command()
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--interval", "interval_s", default=2.0, show_default=True,
              type=click.FloatRange(0.2, 3600), help="Seconds between refreshes.")
@click.option("--limit", "top_n", default=20, show_default=True, type=click.IntRange(1, 200),
              help="Agents shown.")
@click.pass_obj
@refusals
def top(opts: Options, once: bool, interval_s: float, top_n: int) -> None:
    """The agents spending most now (spend per minute, balance, refusals), refreshed in
    place; --once prints one frame."""
    from gateway.cli.top import run_top

    run_top(opts.client().request, opts.url, opts.console, once, interval_s, top_n)


@main.command()
@json_option
@click.pass_obj
def doctor(opts: Options) -> None:
    """Check the deployment (Redis settings, clocks, slots, ledger, lag, identity); exit 1
    when a check fails."""
    from gateway.cli.doctor import run_doctor

    checks = asyncio.run(run_doctor(_settings()))
    failed = [c for c in checks if not c.ok]
    opts.emit({"ok": not failed, "checks": [c.as_dict() for c in checks]},
              lambda: click.echo("\n".join(c.line() for c in checks)))
    if failed:
        sys.exit(1)


@main.command("mcp")
@click.option("--key", required=True, help="The agent key (iou_...) the calls are charged to.")
@click.option("--url", default=None, help="Gateway URL (default: iou --url, IOU_URL).")
@click.pass_obj
def mcp_bridge(opts: Options, key: str, url: str | None) -> None:
    """A stdio MCP server for hosts that only speak stdio: the gateway's /mcp tools,
    charged to KEY's agent."""
    from gateway.mcp.bridge import BridgeError, run_bridge

    try:
        asyncio.run(run_bridge(url or opts.url, key))
    except BridgeError as exc:
        fail(exc.code, f"iou mcp: {exc}")
    except KeyboardInterrupt:
        pass


register(main)

if __name__ == "__main__":
    main()
