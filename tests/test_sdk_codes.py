"""One list of error codes for the gateway and the SDK (gateway/sdk/codes.py): every code
the server can answer has its SDK class, and the server cannot define one outside the list."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import gateway
from gateway.api.responses import HTTP_STATUS
from gateway.metering.errors import GatewayError
from gateway.sdk import ERROR_CLASSES, IOUError, error_for
from gateway.sdk.codes import CLIENT_ERRORS, SERVER_CODES, SERVER_ERRORS

SOURCE = Path(gateway.__file__).parent
CODE_RE = re.compile(r"[a-z][a-z_]*[a-z]")


def _gateway_error_classes() -> list[type[GatewayError]]:
    import gateway.api.app  # noqa: F401  (loads every route module and its errors)

    found: list[type[GatewayError]] = []
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _literal_codes(tree: ast.AST) -> set[str]:
    """Codes written out where an answer is built by hand: ``{"error": "x", ...}`` and
    ``(status, "x", message)`` / ``refuse(status, "x", ...)`` with a 4xx/5xx status."""
    codes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value == "error"
                        and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    codes.add(value.value)
        elements = (node.elts if isinstance(node, ast.Tuple)
                    else node.args if isinstance(node, ast.Call) else [])
        if (len(elements) >= 2 and isinstance(elements[0], ast.Constant)
                and isinstance(elements[0].value, int) and 400 <= elements[0].value < 600
                and isinstance(elements[1], ast.Constant) and isinstance(elements[1].value, str)
                and CODE_RE.fullmatch(elements[1].value)):
            codes.add(elements[1].value)
    return codes


def server_codes() -> set[str]:
    codes = {cls.code for cls in _gateway_error_classes()}
    for path in SOURCE.rglob("*.py"):
        if path.parent.name not in ("sdk", "cli"):
            codes |= _literal_codes(ast.parse(path.read_text()))
    return codes


def test_every_code_the_server_answers_has_its_sdk_class() -> None:
    codes = server_codes()
    assert {"balance_insufficient", "malformed_json", "uri_too_long", "internal",
            "unavailable", "rate_limited"} <= codes  # the scan sees every kind of site
    assert codes <= SERVER_CODES, codes - SERVER_CODES
    for code in codes:
        cls = ERROR_CLASSES[code]
        assert cls is not IOUError and cls.code == code


def test_every_listed_code_has_a_class_whose_status_matches() -> None:
    for entry in SERVER_ERRORS:
        for status in entry.statuses:
            error = error_for(status, {"error": entry.code, "message": "m"})
            assert type(error).__name__ == entry.class_name and error.status == status
    assert {e.code for e in CLIENT_ERRORS}.isdisjoint(SERVER_CODES)


def test_server_errors_become_sdk_errors_with_their_details() -> None:
    for cls in _gateway_error_classes():
        assert cls.code in SERVER_CODES
    from gateway.metering.errors import BalanceInsufficient as ServerPoor

    answer = ServerPoor("m", balance="0.03", cost="0.07").to_dict()
    client_side = error_for(HTTP_STATUS[ServerPoor], answer)
    assert type(client_side).__name__ == "BalanceInsufficient"
    assert str(client_side.details["balance"]) == "0.03"


def test_the_server_cannot_define_a_code_the_sdk_lacks() -> None:
    with pytest.raises(TypeError, match=r"not in gateway\.sdk\.codes"):
        type("Teapot", (GatewayError,), {"code": "teapot", "status": 418})
