"""Process concerns stay at the edges: what each part of the tree may reach for.

- config.py is the only module of the gateway that touches the environment;
- loadtests/ (shipped in the image) imports nothing from tests/, and the image copies no
  tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.metering.engine import Engine
from gateway.metering.inputs import InvariantBroken

ROOT = Path(__file__).resolve().parent.parent
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _env_uses(tree: ast.AST) -> list[int]:
    """Lines that reach the environment: ``os.environ``/``os.getenv`` (and the like) or
    those names imported from os."""
    return [getattr(node, "lineno", 0) for node in ast.walk(tree) if _reaches_environment(node)]


def _reaches_environment(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in ENV_NAMES
    return isinstance(node, ast.ImportFrom) and node.module == "os" and any(
        alias.name in ENV_NAMES for alias in node.names)


def test_config_is_the_only_module_that_touches_the_environment() -> None:
    """Of the server: gateway/sdk/ is the agent's library (it imports no server module and
    reads the contract's IOU_URL and IOU_AGENT_KEY itself)."""
    sdk = ROOT / "gateway" / "sdk"
    found = {str(path.relative_to(ROOT)): lines for path in _modules("gateway")
             if sdk not in path.parents
             and (lines := _env_uses(ast.parse(path.read_text())))}
    assert set(found) == {"gateway/config.py"}, found


def test_the_scanner_sees_each_form_of_reading_the_environment() -> None:
    for code in ("import os\nos.environ['X']", "import os\nos.getenv('X')",
                 "from os import environ", "from os import getenv as g"):
        assert _env_uses(ast.parse(code)), code
    assert not _env_uses(ast.parse("import os\nos.getpid()"))


def test_the_metrics_folder_of_the_workers_is_a_setting() -> None:
    assert load_settings({}).metrics_dir is None
    settings = load_settings({"PROMETHEUS_MULTIPROC_DIR": "/tmp/iou-metrics"})
    assert settings.metrics_dir == Path("/tmp/iou-metrics")


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_loadtests_import_nothing_from_tests() -> None:
    found = {str(path.relative_to(ROOT)): [m for m in _imported_modules(
        ast.parse(path.read_text())) if m == "tests" or m.startswith("tests.")]
        for path in _modules("loadtests")}
    assert not {path: mods for path, mods in found.items() if mods}


def test_the_image_copies_no_tests() -> None:
    copies = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith(("COPY ", "ADD "))]
    assert "loadtests" in copies  # the scan reads the real instructions
    assert not [c for c in copies if c.rstrip("/") == "tests" or c.startswith("tests/")]


def test_production_code_carries_no_fault_hook() -> None:
    """Faults are planted from the tests' side (tests/fault_entry.py)."""
    hooks = [f"{path.relative_to(ROOT)}:{number}" for path in _modules("gateway")
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\bfault_inject|FAULT_INJECT|iou_fault", line)]
    assert not hooks


def test_each_route_is_served_once() -> None:
    """POST /v1/charge is the fast path's alone; every other route is the Starlette app's."""
    from gateway.api import fastpath
    from gateway.api.app import ROUTES

    starlette = {(m, r.path) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"}
    assert ("POST", "/v1/charge") in fastpath.ROUTES
    assert not starlette & set(fastpath.ROUTES)


def _subclasses(cls: type) -> list[type]:
    direct: list[type] = cls.__subclasses__()
    return [c for sub in direct for c in (sub, *_subclasses(sub))]


def test_contract_errors_live_in_one_module_and_their_statuses_in_the_api() -> None:
    """One class per contract code in gateway/metering/errors.py, without an HTTP status;
    the API's one table gives each its status."""
    import gateway.api.app  # noqa: F401  (imports every module that raises)
    from gateway.api.responses import HTTP_STATUS, http_status
    from gateway.metering.errors import GatewayError

    classes = _subclasses(GatewayError)
    coded = [c for c in classes if "code" in vars(c)]
    assert {c.__module__ for c in coded} == {"gateway.metering.errors"}
    assert not [c for c in [GatewayError, *classes] if hasattr(c, "status")]
    raised = [c for c in classes if not c.__subclasses__()]  # (LimitExceeded is a kind)
    assert {c for c in raised if c.__module__ == "gateway.metering.errors"} <= set(HTTP_STATUS)
    for cls in raised:  # a refinement elsewhere (NothingToHold) answers its parent's status
        assert 400 <= HTTP_STATUS[next(c for c in cls.__mro__ if c in HTTP_STATUS)] < 600
    assert http_status(GatewayError("unexpected")) == 500


def test_the_status_table_agrees_with_the_shared_code_list() -> None:
    """Each class's status is one its code comes with in gateway/sdk/codes.py (the list the
    SDK maps answers from)."""
    from gateway.api.responses import HTTP_STATUS
    from gateway.sdk.codes import SERVER_ERRORS

    statuses = {e.code: e.statuses for e in SERVER_ERRORS}
    assert not {cls.__name__: status for cls, status in HTTP_STATUS.items()
                if status not in statuses[cls.code]}


def test_the_whole_number_range_check_is_written_once() -> None:
    """``isinstance(x, bool) or not isinstance(x, int)`` lives in money.is_whole alone (the
    SDK, the agent's library, keeps its own)."""
    pattern = re.compile(r"isinstance\(\w+, bool\) or not isinstance\(\w+, int\)")
    sdk = ROOT / "gateway" / "sdk"
    found = [str(path.relative_to(ROOT)) for path in _modules("gateway")
             if sdk not in path.parents
             for line in path.read_text().splitlines() if pattern.search(line)]
    assert found == ["gateway/metering/money.py"], found


def test_the_idempotency_key_pattern_is_written_once() -> None:
    """The API checks the Idempotency-Key against gateway/api/requests.py's pattern; the
    domain asserts the invariant without a pattern of its own."""
    sdk = ROOT / "gateway" / "sdk"
    found = [str(path.relative_to(ROOT)) for path in _modules("gateway")
             if sdk not in path.parents and r"[\x20-\x7e]{1,128}" in path.read_text()]
    assert found == ["gateway/api/requests.py"]


async def test_the_domain_asserts_what_the_api_validated(real_engine: Engine) -> None:
    """A key the API would have refused reaching the domain is a caller's bug: an assertion
    (the contract's 500), not a refusal naming a field."""
    with pytest.raises(InvariantBroken):
        await real_engine.charge("nobody", "web_search", idempotency_key="tab\there")


def test_reply_decoding_is_written_once() -> None:
    """A reply's bytes-or-str as text: store.resp.reply_text, not a copy per module."""
    copies = [str(path.relative_to(ROOT)) for path in _modules("gateway")
              if "isinstance(value, bytes) else str(value)" in path.read_text()]
    assert copies == ["gateway/store/resp.py"], copies
