"""`iou demo` prints the ledger entries of the calls it just made: it waits (bounded) for the
ledger writer to catch up. It read the ledger right after the calls, and with the writer
committing in batches it showed the grant alone (CI saw it once the writer lingered 200 ms)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from tests.gateway_proc import running_gateway
from tests.proc_helpers import writer_pids

PAUSED_S = 2.0


def test_the_demo_shows_its_charges_in_the_ledger_even_when_the_writer_lags() -> None:
    with running_gateway(None, admin_token=None) as gateway:
        writers = writer_pids(gateway.process.pid)
        assert len(writers) == 1, writers
        os.kill(writers[0], signal.SIGSTOP)  # the writer lags behind the demo's calls
        resume = threading.Timer(PAUSED_S, os.kill, (writers[0], signal.SIGCONT))
        resume.start()
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
            env.update({"IOU_URL": gateway.url, "IOU_DATA_DIR": str(gateway.data_dir)})
            demo = subprocess.run([sys.executable, "-m", "gateway.cli.main", "demo", "--json"],
                                  env=env, capture_output=True, text=True, timeout=120)
        finally:
            resume.join()
            os.kill(writers[0], signal.SIGCONT)
    assert demo.returncode == 0, demo.stderr
    result = json.loads(demo.stdout)
    ledger = result["ledger"]
    assert [e["kind"] for e in ledger][:1] == ["charge"], ledger
    assert ledger[0]["balance_after"] == result["balance"]
