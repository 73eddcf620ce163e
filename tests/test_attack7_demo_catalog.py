"""`iou demo` against a gateway whose catalog already prices the scenario's tools its own
way leaves them alone: it used to PUT its own price over them, and with it dropped their
upstream and its credentials. A tool it finds with the demo's very definition is used as
it is; one defined otherwise is left as it was and the demo plays with its own copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.gateway_proc import ADMIN_TOKEN, Gateway


def _demo(gw: Gateway) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_URL": gw.url, "IOU_DATA_DIR": str(gw.data_dir)})
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "--token", ADMIN_TOKEN,
                           "--json", "demo"], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_demo_leaves_the_operators_tools_alone(gateway: Gateway) -> None:
    operators = {"price": "0.09", "category": "search", "pricing": "fixed",
                 "upstream": "http://127.0.0.1:9/search",
                 "upstream_headers": {"Authorization": "Bearer real-secret"}}
    with gateway.admin() as admin:
        assert admin.put("/v1/tools/web_search", json=operators).status_code == 200
        assert admin.put("/v1/tools/buy_item", json={
            "price": "3", "category": "commerce"}).status_code == 200
        before = {t["tool"]: t for t in admin.get("/v1/tools").json()["tools"]}
    done = _demo(gateway)
    assert done.returncode == 0, done.stderr
    played = json.loads(done.stdout)
    with gateway.admin() as admin:
        after = {t["tool"]: t for t in admin.get("/v1/tools").json()["tools"]}
    for name in ("web_search", "buy_item"):
        assert after[name] == before[name]
    assert after["web_search"]["upstream_headers_set"] is True
    # The demo played on, with its own copies where the catalog differed.
    assert played["calls"][0]["tool"] != "web_search"
    assert played["refusal"]["error"] == "balance_insufficient"
    assert played["task"]["spent"] == "1.5"
