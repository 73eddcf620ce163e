"""The OpenAPI 3.1 document of every route (a test checks it lists exactly the app's routes)."""

from __future__ import annotations

from typing import Any

AMOUNT = {"type": "string", "pattern": r"^(0|[1-9][0-9]*)(\.[0-9]{1,6})?$",
          "description": "decimal IOU tokens, at most 6 decimals"}
NAME = {"type": "string", "pattern": "^[a-z0-9_.-]{1,64}$"}
CHARGE_BODY = {"type": "object", "additionalProperties": False, "required": ["tool"],
               "properties": {"tool": NAME, "cost": AMOUNT, "metadata": {"type": "object"}}}
LIMITS = {"type": "object", "additionalProperties": False, "properties": {
    "per_call": AMOUNT, "daily": AMOUNT, "low_balance": AMOUNT,
    "webhook_url": {"type": ["string", "null"], "format": "uri"},
    "categories": {"type": "object", "additionalProperties": {
        "type": ["object", "null"],
        "properties": {"per_call": AMOUNT, "daily": AMOUNT}}}}}

BATCH_ITEM = {**CHARGE_BODY, "properties": {
    **CHARGE_BODY["properties"],  # type: ignore[dict-item]
    "idempotency_key": {"type": "string", "maxLength": 128,
                        "description": "this item's own key, used instead of the derived one"}}}
_KEY_SHOWN_ONCE = (
    " The key is shown once: it is stored only as a hash, so a retry with the same "
    "Idempotency-Key (replayed, `Idempotent-Replayed: true`) answers the same status and body "
    "with `\"api_key\": null` and an `api_key_note`; make a new key with POST "
    "/v1/agents/{agent}/keys. A retry after a crash never creates a second one.")

# (method, path, summary, auth, request body schema or None, success status)
ROUTE_SPECS: list[tuple[str, str, str, str, dict[str, Any] | None, int]] = [
    ("POST", "/v1/charge", "Charge one tool call", "agent", CHARGE_BODY, 200),
    ("POST", "/v1/charges", "Charge up to 1,000 calls in one request", "agent",
     {"type": "object", "required": ["charges"], "properties": {
         "charges": {"type": "array", "minItems": 1, "maxItems": 1000, "items": BATCH_ITEM}}},
     200),
    ("POST", "/v1/holds", "Hold a tool's price, or up to max_cost for a variable-cost call",
     "agent",
     {"type": "object", "required": ["tool"], "properties": {
         "tool": NAME, "max_cost": AMOUNT, "ttl_s": {"type": "integer", "minimum": 1,
                                                     "maximum": 3600}}}, 201),
    ("POST", "/v1/holds/{hold_id}/capture", "Capture a hold at the actual cost", "agent",
     {"type": "object", "properties": {"cost": AMOUNT}}, 200),
    ("POST", "/v1/holds/{hold_id}/release", "Release a hold", "agent", None, 200),
    ("GET", "/v1/balance", "The caller's balance, held, spent today, limits", "agent", None,
     200),
    ("POST", "/v1/tools/{tool}/invoke", "Call a tool's upstream through the gateway", "agent",
     None, 200),
    ("POST", "/v1/agents", "Create an agent (grant defaults to IOU_SIGNUP_GRANT)", "admin",
     {"type": "object", "required": ["name"], "properties": {"name": NAME, "grant": AMOUNT}},
     201),
    ("GET", "/v1/agents", "List agents (limit, cursor)", "admin", None, 200),
    ("GET", "/v1/agents/{agent}", "One agent with its limits", "admin", None, 200),
    ("POST", "/v1/agents/{agent}/fund", "Add tokens", "admin",
     {"type": "object", "required": ["amount"], "properties": {"amount": AMOUNT}}, 200),
    ("GET", "/v1/agents/{agent}/limits", "The agent's limits", "admin", None, 200),
    ("PATCH", "/v1/agents/{agent}/limits", "Merge limits; null removes one", "admin", LIMITS,
     200),
    ("POST", "/v1/agents/{agent}/freeze", "Freeze: paid calls are refused", "admin", None, 200),
    ("POST", "/v1/agents/{agent}/unfreeze", "Unfreeze", "admin", None, 200),
    ("POST", "/v1/agents/{agent}/keys", "A further agent key (shown once)", "admin", None, 201),
    ("GET", "/v1/agents/{agent}/keys", "The agent's key ids, created and last used",
     "admin|agent", None, 200),
    ("DELETE", "/v1/agents/{agent}/keys/{key_id}", "Revoke a key", "admin", None, 204),
    ("GET", "/v1/agents/{agent}/ledger", "The ledger, newest first (limit, before, kind, tool)",
     "admin", None, 200),
    ("GET", "/v1/agents/{agent}/usage",
     "Spending by tool or category per hour or day, from the ledger (by, period, since, "
     "until)", "admin|agent", None, 200),
    ("GET", "/v1/usage", "Every agent's spending, or one's with agent= (by, period, since, "
     "until, agent)", "admin", None, 200),
    ("GET", "/v1/summary", "The agents table: paged, sorted and filtered, with totals "
     "(limit, cursor, sort, order, q, frozen)", "admin", None, 200),
    ("PUT", "/v1/tools/{tool}", "Create or replace a catalog entry", "admin",
     {"type": "object", "required": ["price", "category"], "properties": {
         "price": AMOUNT, "category": NAME, "pricing": {"enum": ["fixed", "variable"]},
         "upstream": {"type": "string", "format": "uri"},
         "upstream_headers": {"type": "object", "additionalProperties": {"type": "string"}}}},
     200),
    ("GET", "/v1/tools", "The price catalog", "admin", None, 200),
    ("DELETE", "/v1/tools/{tool}", "Remove a catalog entry", "admin", None, 204),
    ("GET", "/healthz", "Process up", "none", None, 200),
    ("GET", "/readyz", "Redis, scripts and ledger lag", "none", None, 200),
    ("GET", "/metrics", "Prometheus metrics", "none", None, 200),
    ("GET", "/openapi.json", "This document", "none", None, 200),
    ("GET", "/dashboard", "The operators' web page (redirects to /dashboard/)", "none", None,
     308),
]

# Rules of a route beyond its summary, shown as the operation's description.
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("POST", "/v1/charge"):
        "The catalog price is what a call costs: cost is accepted only for tools priced "
        "variable (422 invalid_request, field cost, otherwise). A price or category change "
        "applies to every call answered after its PUT returned.",
    ("POST", "/v1/holds"):
        "A hold on a fixed-price tool holds exactly its price: max_cost may be omitted; "
        "below the price is 422 invalid_request (field max_cost); above it, the hold is "
        "exactly the price (see amount in the answer). A variable tool holds max_cost, by "
        "default its catalog price.",
    ("PUT", "/v1/tools/{tool}"):
        "Answers once every partition's copy of the catalog has the change: every charge, "
        "hold or capture answered after this PUT returned uses the new price, category and "
        "pricing, on every worker.",
    ("POST", "/v1/holds/{hold_id}/capture"):
        "cost is required for a variable hold (at most the held amount). A hold on a "
        "fixed-price tool charges exactly its held price: omit cost or give exactly that "
        "amount; any other cost is 422 invalid_request (field cost). "
        "A capture is checked against the daily window it lands in: a hold taken on an "
        "earlier UTC day is not counted in today's window, so its cost must fit today's "
        "daily and category daily caps, else 429 limit_exceeded (limit daily or "
        "category_daily) with Retry-After; nothing is written and the hold stays open "
        "until captured at a cost that fits, released or expired.",
    ("POST", "/v1/charges"): (
        "With an Idempotency-Key the batch is exactly-once as a whole: the key is bound to "
        "this body for 24 h (another body with it is 409 idempotency_conflict; not kept when "
        "every item was refused) and each item "
        "is charged under a key derived from the batch's key and its index (shown in the "
        "ledger as `<key>\u00b7<index>`; no client-chosen key can equal it), unless it "
        "carries its own `idempotency_key`. A retry runs every item again: an item charged "
        "before answers its first answer without being charged again, a refused item is "
        "evaluated again. An item that fails inside the gateway is that item's error object "
        "(`internal`), never a failed batch."),
    ("POST", "/v1/tools/{tool}/invoke"): (
        "With an Idempotency-Key the call is charged once: a retry while the first is still "
        "running is 409; once the upstream answered, its answer is kept and replayed, also "
        "when the gateway stopped between the upstream's answer and the capture. "
        "A fixed-price tool is held and captured at its catalog price (X-IOU-Max-Cost is "
        "only for tools priced variable: the hold's ceiling; the upstream's X-IOU-Cost, up "
        "to it, is captured)."),
    ("POST", "/v1/agents"): "Creates the agent and its first key." + _KEY_SHOWN_ONCE,
    ("POST", "/v1/agents/{agent}/keys"): "Adds a further key." + _KEY_SHOWN_ONCE,
    ("GET", "/v1/agents/{agent}/keys"):
        "The admin token, or the agent's own key (another agent's key is 403). Answers "
        '{"keys": [{"key_id", "created_at", "last_used_at"}]}, oldest first; never a key '
        "nor its hash. last_used_at is recorded at most once a minute per key and gateway "
        "worker (no Redis write per request), so it is exact to about a minute; null when "
        "never used.",
}

ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "string"}, "message": {"type": "string"}}}


def _operation(method: str, path: str, summary: str, auth: str, body: dict[str, Any] | None,
               status: int) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_')}".replace(
            "{", "").replace("}", "").replace(".", "_"),
        "responses": {str(status): {"description": "success"},
                      "default": {"description": "error",
                                  "content": {"application/json": {"schema": ERROR}}}},
        "parameters": [{"name": p.strip("{}"), "in": "path", "required": True,
                        "schema": {"type": "string"}}
                       for p in path.split("/") if p.startswith("{")],
    }
    if (method, path) in DESCRIPTIONS:
        op["description"] = DESCRIPTIONS[(method, path)]
    if auth != "none":
        op["security"] = [{name: []} for name in auth.split("|")]  # any one of them
    if method == "POST":
        op["parameters"].append({"name": "Idempotency-Key", "in": "header", "required": False,
                                 "schema": {"type": "string", "maxLength": 128}})
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    return op


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, auth, body, status in ROUTE_SPECS:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, summary, auth,
                                                                body, status)
    return {
        "openapi": "3.1.0",
        "info": {"title": "IOU gateway", "version": "0.1.0",
                 "description": "Metering gateway that caps what AI agents can spend."},
        "paths": paths,
        "components": {"securitySchemes": {
            "admin": {"type": "http", "scheme": "bearer", "description": "IOU_ADMIN_TOKEN"},
            "agent": {"type": "http", "scheme": "bearer", "description": "agent key iou_..."}}},
    }
