"""``require_task`` is a limit like the others, so ``iou limits`` sets it
(``--require-task`` / ``--no-require-task``) and shows it; the CLI had no way to set it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import error_of, new_agent


def _limits(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env["IOU_ADMIN_TOKEN"] = ADMIN_TOKEN
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "--url", gateway.url,
                           "limits", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_iou_limits_sets_and_lifts_require_task(gateway: Gateway) -> None:
    name, key = new_agent(gateway, grant="10")
    set_it = _limits(gateway, "--agent", name, "--require-task")
    assert set_it.returncode == 0, set_it.stderr
    assert "require_task" in set_it.stdout
    with gateway.agent(key) as agent:
        refused = agent.post("/v1/charge", json={"tool": "web_search"})
        assert refused.status_code == 403 and error_of(refused) == "limit_exceeded"
        assert refused.json()["limit"] == "task_required"
        lifted = _limits(gateway, "--agent", name, "--no-require-task")
        assert lifted.returncode == 0, lifted.stderr
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
    with gateway.admin() as admin:
        assert not admin.get(f"/v1/agents/{name}/limits").json().get("require_task")
