"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): teach the generator
the catalog, which no schema can know.

A few rules of the contract depend on the tool a request names, not on its shape (and the
usage routes' since/until on each other and on the clock): cost is
only for tools priced variable (and required by them), a hold on a fixed-price tool holds
at least its price, a capture takes at most what its hold set aside. A schema-valid request
may break them and is refused, rightly, with 422. So the *positive* requests of a run are
made to follow them for the seed catalog (tests/http_helpers.py SEED_TOOLS) before they
are sent; negative requests are sent as generated, and every check stays on. Likewise a
child agent's name must hash to its parent's partition (the gateway's default 16
partitions): a positive child creation gets the name the gateway itself would suggest.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import schemathesis

from gateway.config import PARTITIONS_DEFAULT
from gateway.metering.children import partition_name
from gateway.store.keys import partition_of
from tests.http_helpers import SEED_TOOLS

# What the run's holds set aside, from their answers: hold_id -> (tool, amount).
_holds: dict[str, tuple[str, str]] = {}


def _pricing(tool: Any) -> str | None:
    entry = SEED_TOOLS.get(tool) if isinstance(tool, str) else None
    return None if entry is None else entry.get("pricing", "fixed")


def _follow_catalog(body: dict[str, Any]) -> None:
    """A charge body (or batch item) that fits its tool's pricing."""
    pricing = _pricing(body.get("tool"))
    if pricing == "fixed":
        body.pop("cost", None)
    elif pricing == "variable" and body.get("cost") is None:
        body["cost"] = "0.01"


def _fit_hold(body: dict[str, Any]) -> None:
    if _pricing(body.get("tool")) == "fixed":
        body.pop("max_cost", None)  # a fixed-price tool holds its price


def _fit_capture(hold_id: Any, body: dict[str, Any]) -> None:
    tool, amount = _holds.get(hold_id, (None, None))
    if tool is None or amount is None:
        return  # not a hold of this run: 404, whatever the body
    if _pricing(tool) == "variable":
        cost = body.get("cost")
        if not isinstance(cost, str) or Decimal(cost) > Decimal(amount):
            body["cost"] = amount
    else:
        body.pop("cost", None)


def _fit_child(parent: Any, body: dict[str, Any]) -> None:
    """A child's name that lands in its parent's partition (a name rule no schema states)."""
    limits = body.get("limits")
    if isinstance(limits, dict):
        limits.pop("webhook_url", None)  # the admin's alone (422 for an agent key)
    name = body.get("name")
    if not isinstance(parent, str) or not isinstance(name, str):
        return
    fitting = partition_name(name, partition_of(parent, PARTITIONS_DEFAULT),
                             PARTITIONS_DEFAULT)
    if fitting is not None:
        body["name"] = fitting


def _is_positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


USAGE_PATHS = ("/v1/agents/{agent}/usage", "/v1/usage")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if not _is_positive(case):
        return
    route = (case.method.upper(), case.operation.path)
    if route[1] in USAGE_PATHS and case.query:
        # since must come before until (by default now) and the range is bounded: rules
        # between two values and the clock, which a schema cannot state.
        case.query.pop("since", None)
        case.query.pop("until", None)
    if not isinstance(case.body, dict):
        return
    if route == ("POST", "/v1/charge"):
        _follow_catalog(case.body)
    elif route == ("POST", "/v1/charges"):
        for item in case.body.get("charges") or []:
            if isinstance(item, dict):
                _follow_catalog(item)
    elif route == ("POST", "/v1/holds"):
        _fit_hold(case.body)
    elif route == ("POST", "/v1/holds/{hold_id}/capture"):
        _fit_capture((case.path_parameters or {}).get("hold_id"), case.body)
    elif route == ("POST", "/v1/agents/{agent}/children"):
        _fit_child((case.path_parameters or {}).get("agent"), case.body)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if (case.method.upper(), case.operation.path) != ("POST", "/v1/holds"):
        return
    if response.status_code == 201:
        answer = response.json()
        _holds[answer["hold_id"]] = (answer["tool"], answer["amount"])
