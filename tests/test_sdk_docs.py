"""docs/sdk.md's examples run against a real gateway, each as an agent process of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent

DOC = Path(__file__).resolve().parent.parent / "docs" / "sdk.md"
# Only blocks fenced exactly ```python run; ```python no-run ones need a framework.
BLOCK_RE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
BLOCKS = BLOCK_RE.findall(DOC.read_text())


def test_the_doc_has_its_short_example() -> None:
    assert len(BLOCKS) >= 5
    first = [line for line in BLOCKS[0].splitlines() if line.strip()]
    assert len(first) < 20


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(gateway: Gateway, tmp_path: Path, index: int) -> None:
    _, key = new_agent(gateway, "10")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_URL": gateway.url, "IOU_AGENT_KEY": key,
                "PYTHONPATH": str(DOC.parent.parent)})
    done = subprocess.run([sys.executable, "-c", BLOCKS[index]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
