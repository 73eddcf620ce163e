"""A malformed IOU_REDIS_URL (a port that is no number or out of range, a broken IPv6 host, a
database that is no number) stops start-up with one line naming the variable, as every bad
value does; it was a Python traceback from deep in the connection code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.config import ConfigError, load_settings

BAD_URLS = ["redis://x:y:z", "redis://127.0.0.1:99999", "redis://[::1",
            "redis://127.0.0.1:6379/abc", "rediss://h:-5/0", "redis+cluster://h:port",
            "unix:///tmp/r.sock?db=x", "unix://"]
GOOD_URLS = ["redis://127.0.0.1:6379/0", "redis://:secret@h:1/2", "rediss://h",
             "redis+cluster://h:7000", "unix:///tmp/r.sock?db=3", "redis://[::1]:6379"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_redis_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="IOU_REDIS_URL"):
        load_settings({"IOU_REDIS_URL": url})


@pytest.mark.parametrize("url", GOOD_URLS)
def test_a_well_formed_redis_url_is_accepted(url: str) -> None:
    assert load_settings({"IOU_REDIS_URL": url}).redis_url == url


def test_the_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"IOU_REDIS_URL": "redis://user:hunter2-secret@h:port/0"})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["doctor"]])
def test_the_cli_prints_one_line_and_exits(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env["IOU_REDIS_URL"] = "redis://x:y:z"
    result = subprocess.run([sys.executable, "-m", "gateway.cli.main", *command],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "IOU_REDIS_URL" in lines[0], result.stderr
