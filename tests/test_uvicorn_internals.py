"""gateway/api/http_protocol.py subclasses uvicorn's private httptools protocol and replaces
two of its module-level answers. This fails loudly when the uvicorn installed is not one the
gateway was tested with, or when any internal it relies on changed shape or code.

When it fails after a uvicorn upgrade: read the new code of each method named below, adapt
GatewayHttpProtocol (which re-implements ``on_response_complete`` and overrides the others
around ``super()``), run tests/test_http_protocol.py, test_slow_clients.py,
test_server_errors_json.py and test_malformed_corpus.py, then record the new digests here and
widen the uvicorn bound in pyproject.toml.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from uvicorn.protocols.http import httptools_impl

from gateway.api import http_protocol

ROOT = Path(__file__).resolve().parent.parent

# sha256 (first 16 hex) of the source of each uvicorn function the gateway's protocol
# overrides, re-implements, or depends on the body of (uvicorn 0.54.0).
DIGESTS = {
    "HttpToolsProtocol.__init__": "d5fa7df7a7fc6bdf",
    "HttpToolsProtocol.connection_made": "90cf013eb407eb3f",
    "HttpToolsProtocol.connection_lost": "c5567cca5922d934",
    "HttpToolsProtocol.data_received": "4344ff8569ed38be",
    "HttpToolsProtocol.send_400_response": "62719a7bb676f7ad",
    "HttpToolsProtocol.on_message_begin": "8b027723aca37972",
    "HttpToolsProtocol.on_headers_complete": "c713423e2fb6aa9d",
    "HttpToolsProtocol.on_message_complete": "ca6a0254d3b3f82d",
    "HttpToolsProtocol.on_response_complete": "ca5f13dad87ab873",
    "HttpToolsProtocol._start_asgi_task": "6bc6200ff254c21a",
    "RequestResponseCycle.run_asgi": "3a0a2cb6806d9f85",
    "RequestResponseCycle.send_500_response": "5814e99873b15939",
}


def _uvicorn_bounds() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lowest, first excluded) version of uvicorn that pyproject.toml accepts."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(d for d in project["dependencies"] if d.startswith("uvicorn"))
    low = re.search(r">=\s*([\d.]+)", spec)
    high = re.search(r"<\s*([\d.]+)", spec)
    assert low and high, f"uvicorn must be pinned with a lower and an upper bound: {spec}"
    return _parts(low.group(1)), _parts(high.group(1))


def _parts(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def test_the_installed_uvicorn_is_within_the_pinned_range() -> None:
    low, high = _uvicorn_bounds()
    installed = _parts(version("uvicorn"))
    assert low <= installed < high, f"uvicorn {version('uvicorn')} is outside {low}..<{high}"


def _uvicorn_source(name: str) -> str:
    """The source of ``Class.method`` as uvicorn's file has it (read from the file: the
    gateway replaces send_500_response on the class itself)."""
    owner, method = name.split(".")
    module = ast.parse(Path(inspect.getfile(httptools_impl)).read_text())
    text = Path(inspect.getfile(httptools_impl)).read_text()
    for node in module.body:
        if isinstance(node, ast.ClassDef) and node.name == owner:
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                        item.name == method):
                    return ast.get_source_segment(text, item) or ""
    return ""


def test_the_internals_the_protocol_relies_on_are_unchanged() -> None:
    changed = [name for name, digest in DIGESTS.items() if hashlib.sha256(
        _uvicorn_source(name).encode()).hexdigest()[:16] != digest]
    assert not changed, f"uvicorn changed {changed}: review gateway/api/http_protocol.py"


def test_the_replaced_module_answers_are_the_ones_uvicorn_looks_up() -> None:
    """uvicorn finds its 503 by module global and its 500 as a method, at call time: the
    gateway's JSON versions are what it will find."""
    headers_complete = inspect.getsource(httptools_impl.HttpToolsProtocol.on_headers_complete)
    assert "app = service_unavailable" in headers_complete
    run_asgi = inspect.getsource(httptools_impl.RequestResponseCycle.run_asgi)
    assert "await self.send_500_response()" in run_asgi
    assert httptools_impl.service_unavailable is (  # type: ignore[attr-defined]
        http_protocol._json_service_unavailable)
    assert httptools_impl.RequestResponseCycle.send_500_response is http_protocol._json_500
    for status in (400, 408, 414, 431, 503, 505):
        assert httptools_impl.STATUS_LINE[status].startswith(f"HTTP/1.1 {status} ".encode())


def test_the_state_the_protocol_reads_is_set_where_it_expects() -> None:
    """Attributes GatewayHttpProtocol reads from uvicorn's (set in __init__ or
    connection_made)."""
    protocol = httptools_impl.HttpToolsProtocol
    init = inspect.getsource(protocol.__init__) + inspect.getsource(protocol.connection_made)
    for attribute in ("parser", "flow", "pipeline", "server_state", "cycle", "transport",
                      "headers", "loop"):
        assert re.search(rf"self\.{attribute}\b[^=\n]*=", init), attribute
    assert "self.url = " in inspect.getsource(protocol.on_message_begin)
