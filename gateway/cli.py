"""The ``iou`` command line."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import click

from gateway.config import ConfigError, Settings, load_settings
from gateway.embedded import start_embedded
from gateway.secrets_store import ensure_secret


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"iou: {exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """IOU gateway: pre-funded balances that cap what AI agents can spend."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve(host: str, port: int, workers: int) -> None:
    """Run the gateway (and, with no IOU_REDIS_URL, its private Redis under IOU_DATA_DIR)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()
    embedded = start_embedded(settings.data_dir) if settings.uses_embedded_redis else None
    if settings.admin_token is None:
        ensure_secret(settings.data_dir, "admin_token")
        click.echo(f"admin token: {(settings.data_dir / 'admin_token').resolve()}")
    if settings.webhook_secret is None:
        ensure_secret(settings.data_dir, "webhook_secret")
    if workers > 1:
        _prometheus_multiprocess(settings.data_dir / "metrics")
    click.echo(f"IOU gateway on http://{host}:{port} ({workers} worker(s))")
    try:
        uvicorn.run("gateway.api.app:create_app", factory=True, host=host, port=port,
                    workers=workers, loop="uvloop", http="httptools", access_log=False,
                    log_level="warning", lifespan="on")
    finally:
        if embedded is not None:
            embedded.stop()


def _prometheus_multiprocess(folder: Path) -> None:
    # prometheus_client reads this variable itself; workers inherit it.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


if __name__ == "__main__":
    main()
