#!/usr/bin/env bash
# The test command (README): installs what the tests need, then lint, types, fast and slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
command -v redis-server >/dev/null 2>&1 || missing="redis-server"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
# promtool and prometheus (Debian's package): the alert rules' unit tests and the end-to-end alert
# test; the tests fail, not skip, without them.
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v faketime >/dev/null 2>&1 || missing="$missing faketime"  # iou doctor's clock test
if [ -n "$missing" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check gateway tests loadtests
.venv/bin/mypy
.venv/bin/pytest -m "not slow" "$@"
.venv/bin/pytest -m slow "$@"
