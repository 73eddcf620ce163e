"""Serve the reference app as `iou serve` serves the gateway, protocol included.

    python -m loadtests.reference_server PORT WORKERS [httptools|gateway]

"httptools" is stock uvicorn (the speed issue's reference); "gateway" runs it on the
gateway's own HTTP protocol (one send per response), to show which part of the gap the
protocol closes and which part is metering.
"""

from __future__ import annotations

import sys

import uvicorn

from gateway.api.http_protocol import CoalescingHttpToolsProtocol


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    protocol = sys.argv[3] if len(sys.argv) > 3 else "httptools"
    http = CoalescingHttpToolsProtocol if protocol == "gateway" else "httptools"
    uvicorn.run("loadtests.reference_app:app", host="127.0.0.1", port=port, workers=workers,
                loop="uvloop", http=http, access_log=False, log_level="warning",
                proxy_headers=False, server_header=False, date_header=False)


if __name__ == "__main__":
    main()
