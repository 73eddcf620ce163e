"""The Redis layer is sealed: only gateway/store/ talks to the connection, and it imports
nothing from the parts above it (the arrows of the layout point down)."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"
STORE = GATEWAY / "store"
# The connection's methods; a call of one of them is a raw Redis command.
CONNECTION_METHODS = {"call", "call_or_raise", "call_each"}
ABOVE_THE_STORE = ("gateway.metering", "gateway.api", "gateway.ledger", "gateway.webhooks",
                   "gateway.cli", "gateway.config", "gateway.runtime", "gateway.observability",
                   "gateway.sdk", "gateway.dashboard")


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _outside_store() -> list[Path]:
    return [p for p in _modules(GATEWAY) if STORE not in p.parents]


def _raw_calls(source: str, name: str) -> list[str]:
    """``x.call(...)``, ``x.call_or_raise(...)``, ``x.call_each(...)`` sites in one module."""
    tree = ast.parse(source, name)
    return [f"{name}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in CONNECTION_METHODS]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_module_outside_the_store_calls_the_connection() -> None:
    sites = [site for path in _outside_store()
             for site in _raw_calls(path.read_text(), str(path.relative_to(GATEWAY.parent)))]
    assert sites == [], "raw Redis commands outside gateway/store/: " + ", ".join(sites)


def test_the_rule_sees_a_raw_call() -> None:
    """The check above can fail: it finds a call written the way the old code wrote them."""
    source = "async def f(engine):\n    await engine.conn.call_or_raise(b'GET', 'k')\n"
    assert _raw_calls(source, "probe.py") == ["probe.py:2"]


def test_the_store_imports_nothing_above_it() -> None:
    upward = sorted(f"{path.relative_to(GATEWAY.parent)} imports {name}"
                    for path in _modules(STORE) for name in _imports(path)
                    if name.startswith(ABOVE_THE_STORE))
    assert upward == []


def test_no_lua_script_is_sent_from_outside_the_store() -> None:
    """Scripts live in lua/ and run through the store's wrappers, never inline (EVAL)."""
    sites = [f"{path.relative_to(GATEWAY.parent)}"
             for path in _outside_store() if "redis.call(" in path.read_text()]
    assert sites == []


def test_the_domain_imports_nothing_above_it() -> None:
    """metering/ is given its values (no Settings, no HOLD_TTL_S_MAX from config) and knows
    no HTTP, ledger or worker."""
    above = ("gateway.api", "gateway.config", "gateway.ledger", "gateway.webhooks",
             "gateway.cli", "gateway.runtime", "gateway.observability")
    upward = sorted(f"{path.relative_to(GATEWAY.parent)} imports {name}"
                    for path in _modules(GATEWAY / "metering") for name in _imports(path)
                    if name.startswith(above))
    assert upward == []
