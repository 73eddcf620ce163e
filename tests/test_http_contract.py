"""A contract test per route and per error code, against a real gateway process."""

from __future__ import annotations

import time

import httpx

from tests.gateway_proc import Gateway
from tests.http_helpers import balance, error_of, new_agent, unique


def test_seed_scenario_ends_at_8_03(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "8.3", "seed")
    with gateway.agent(key) as agent:
        assert agent.post("/v1/charge", json={"tool": "web_search"}).json()["balance"] == "8.25"
        assert agent.post("/v1/charge", json={"tool": "web_browse"}).json()["balance"] == "8.13"
        hold = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "0.5"})
        assert hold.status_code == 201 and hold.json()["balance"] == "7.63"
        captured = agent.post(f"/v1/holds/{hold.json()['hold_id']}/capture",
                              json={"cost": "0.08"})
        assert captured.json() | {"charge_id": "x"} == {
            "charge_id": "x", "cost": "0.08", "released": "0.42", "balance": "8.05",
            "warnings": []}
        assert agent.post("/v1/charge", json={"tool": "email_send"}).json()["balance"] == "8.03"
    assert balance(gateway, key) == "8.03"


def test_create_agent_default_grant_and_exists(gateway: Gateway) -> None:
    name = unique("grant")
    with gateway.admin() as admin:
        created = admin.post("/v1/agents", json={"name": name})
        assert created.status_code == 201
        body = created.json()
        assert body["balance"] == "10" and body["api_key"].startswith("iou_")
        assert len(body["api_key"]) >= 36
        again = admin.post("/v1/agents", json={"name": name})
        assert again.status_code == 409 and error_of(again) == "agent_exists"


def test_list_agents_pages_with_cursor(gateway: Gateway) -> None:
    names = sorted(new_agent(gateway, "1", "page")[0] for _ in range(5))
    with gateway.admin() as admin:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = admin.get("/v1/agents", params=params).json()
            seen += [a["agent"] for a in page["agents"]]
            assert len(page["agents"]) <= 2
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(seen) and set(names) <= set(seen)
        first = admin.get("/v1/agents", params={"limit": "1000"}).json()["agents"]
        row = next(a for a in first if a["agent"] == names[0])
        assert row == {"agent": names[0], "balance": "1", "held": "0", "spent_today": "0",
                       "frozen": False}
        bad = admin.get("/v1/agents", params={"limit": "0"})
        assert bad.status_code == 422 and bad.json()["field"] == "limit"


def test_get_agent_and_not_found(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "3")
    with gateway.admin() as admin:
        detail = admin.get(f"/v1/agents/{name}").json()
        assert detail["balance"] == "3" and detail["limits"]["low_balance"] == "1"
        assert detail["created_at"].endswith("Z")
        missing = admin.get("/v1/agents/nobody-here")
        assert missing.status_code == 404 and error_of(missing) == "not_found"


def test_fund(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "0")
    with gateway.admin() as admin:
        funded = admin.post(f"/v1/agents/{name}/fund", json={"amount": "20"})
        assert funded.status_code == 200
        assert funded.json()["balance"] == "20" and funded.json()["entry_id"]
        number = admin.post(f"/v1/agents/{name}/fund", json={"amount": 0.5})
        assert number.json()["balance"] == "20.5"
        assert admin.post("/v1/agents/ghost-x/fund", json={"amount": "1"}).status_code == 404
    assert balance(gateway, key) == "20.5"


def test_limits_get_patch_merge_and_remove(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "100")
    with gateway.admin() as admin:
        patched = admin.patch(f"/v1/agents/{name}/limits", json={
            "per_call": "1", "daily": "5", "low_balance": "2",
            "categories": {"llm": {"per_call": "0.05", "daily": "2"},
                           "commerce": {"per_call": "75"}},
            "webhook_url": "http://127.0.0.1:9/iou"})
        assert patched.status_code == 200
        assert patched.json() == {
            "per_call": "1", "daily": "5", "low_balance": "2",
            "categories": {"commerce": {"per_call": "75"},
                           "llm": {"per_call": "0.05", "daily": "2"}},
            "webhook_url": "http://127.0.0.1:9/iou"}
        merged = admin.patch(f"/v1/agents/{name}/limits",
                             json={"per_call": None, "categories": {"llm": None}}).json()
        assert merged["per_call"] is None and merged["daily"] == "5"
        assert merged["categories"] == {"commerce": {"per_call": "75"}}
        assert admin.get(f"/v1/agents/{name}/limits").json() == merged
        bad = admin.patch(f"/v1/agents/{name}/limits", json={"webhook_url": "ftp://x"})
        assert bad.status_code == 422 and bad.json()["field"] == "webhook_url"
        missing = admin.patch("/v1/agents/ghost-y/limits", json={"daily": "1"})
        assert missing.status_code == 404


def test_freeze_blocks_paid_calls_not_free(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "5")
    with gateway.admin() as admin, gateway.agent(key) as agent:
        frozen = admin.post(f"/v1/agents/{name}/freeze")
        assert frozen.json() == {"agent": name, "frozen": True}
        refused = agent.post("/v1/charge", json={"tool": "web_search"})
        assert refused.status_code == 423 and error_of(refused) == "agent_frozen"
        assert agent.post("/v1/charge", json={"tool": "calc"}).status_code == 200
        assert admin.post(f"/v1/agents/{name}/unfreeze").json()["frozen"] is False
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200


def test_keys_add_and_revoke_within_one_second(gateway: Gateway) -> None:
    name, first = new_agent(gateway, "5")
    with gateway.admin() as admin:
        added = admin.post(f"/v1/agents/{name}/keys")
        assert added.status_code == 201
        key_id, second = added.json()["key_id"], added.json()["api_key"]
        assert balance(gateway, second) == "5"
        assert admin.delete(f"/v1/agents/{name}/keys/{key_id}").status_code == 204
        revoked_at = time.monotonic()
        with gateway.agent(second) as agent:
            # A 200 may only answer a request sent within 1 s of the revocation (when it was
            # answered depends on the machine's load, not on the gateway's cache).
            while True:
                sent_at = time.monotonic()
                if agent.get("/v1/balance").status_code != 200:
                    break
                assert sent_at - revoked_at < 1.0
                time.sleep(0.05)
            gone = agent.get("/v1/balance")
        with gateway.agent("iou_" + "z" * 43) as unknown:
            assert unknown.get("/v1/balance").json() == gone.json()
        assert gone.status_code == 401 and error_of(gone) == "unauthorized"
        assert balance(gateway, first) == "5"
        assert admin.delete(f"/v1/agents/{name}/keys/{key_id}").status_code == 404


def test_tools_put_list_delete(gateway: Gateway) -> None:
    tool = unique("tool").replace("-", "_")
    with gateway.admin() as admin:
        put = admin.put(f"/v1/tools/{tool}", json={
            "price": "0.3", "category": "tool", "upstream": "http://127.0.0.1:9/x",
            "upstream_headers": {"Authorization": "Bearer upstream-secret"}})
        assert put.status_code == 200
        assert put.json() == {"tool": tool, "price": "0.3", "category": "tool",
                              "pricing": "fixed", "upstream": "http://127.0.0.1:9/x",
                              "upstream_headers_set": True}
        listed = admin.get("/v1/tools")
        assert "upstream-secret" not in listed.text
        assert any(t["tool"] == tool for t in listed.json()["tools"])
        assert admin.delete(f"/v1/tools/{tool}").status_code == 204
        assert admin.delete(f"/v1/tools/{tool}").status_code == 404
        assert all(t["tool"] != tool for t in admin.get("/v1/tools").json()["tools"])


def test_charge_refusals_with_details(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "0.1")
    with gateway.admin() as admin, gateway.agent(key) as agent:
        admin.patch(f"/v1/agents/{name}/limits", json={"per_call": "1", "daily": "0.2"})
        ok = agent.post("/v1/charge", json={"tool": "web_search"})
        assert ok.json()["balance"] == "0.05"
        poor = agent.post("/v1/charge", json={"tool": "web_browse"})
        assert poor.status_code == 402
        assert poor.json() | {"message": ""} == {"error": "balance_insufficient", "message": "",
                                                  "balance": "0.05", "cost": "0.12"}
        admin.post(f"/v1/agents/{name}/fund", json={"amount": "10"})
        capped = agent.post("/v1/charge", json={"tool": "buy"})
        assert capped.status_code == 403 and capped.json()["limit"] == "per_call"
        assert capped.json()["max"] == "1" and capped.json()["cost"] == "1.5"
        for _ in range(3):
            assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
        daily = agent.post("/v1/charge", json={"tool": "web_search"})
        assert daily.status_code == 429 and daily.json()["limit"] == "daily"
        assert int(daily.headers["retry-after"]) == daily.json()["retry_after_s"] > 0
        assert daily.json()["spent"] == "0.2" and daily.json()["max"] == "0.2"
        unknown = agent.post("/v1/charge", json={"tool": "no_such_tool"})
        assert unknown.status_code == 404


def test_category_per_call_cap(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "100")
    with gateway.admin() as admin, gateway.agent(key) as agent:
        admin.patch(f"/v1/agents/{name}/limits",
                    json={"categories": {"commerce": {"per_call": "1"}}})
        capped = agent.post("/v1/charge", json={"tool": "buy"})
        assert capped.status_code == 403
        assert capped.json()["limit"] == "category_per_call"
        assert capped.json()["category"] == "commerce"


def test_free_tool_at_zero_balance(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "0")
    with gateway.agent(key) as agent:
        free = agent.post("/v1/charge", json={"tool": "calc"})
        assert free.status_code == 200 and free.json()["cost"] == "0"


def test_low_balance_warning_before_failing(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1.1")  # default low_balance is 1
    with gateway.agent(key) as agent:
        first = agent.post("/v1/charge", json={"tool": "web_search"}).json()
        assert first["warnings"] == []
        second = agent.post("/v1/charge", json={"tool": "web_search"}).json()
        assert second["warnings"] == [] and second["balance"] == "1"  # at, not below
        third = agent.post("/v1/charge", json={"tool": "web_search"}).json()
        assert third["warnings"] == ["low_balance"]
        assert agent.get("/v1/balance").json()["warnings"] == ["low_balance"]


def test_batch_results_in_order(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "0.2")
    with gateway.agent(key) as agent:
        # A malformed item refuses the whole batch before anything is charged.
        malformed: list[tuple[object, str]] = [
            ({"tool": "web_search", "extra": 1}, "charges[1].extra"), ("x", "charges[1]")]
        for item, field in malformed:
            refused = agent.post("/v1/charges", json={"charges": [{"tool": "web_search"}, item]})
            assert refused.status_code == 422 and refused.json()["field"] == field
        response = agent.post("/v1/charges", json={"charges": [
            {"tool": "web_search"}, {"tool": "nope"}, {"tool": "web_browse"},
            {"tool": "web_browse"},
            {"tool": "llm_summarize", "cost": "0.01", "idempotency_key": "b1"},
            {"tool": "llm_summarize", "cost": "0.01", "idempotency_key": "b1"}]})
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r.get("error", "ok") for r in results] == [
            "ok", "not_found", "ok", "balance_insufficient", "ok", "ok"]
        assert results[4] == results[5]
        assert balance(gateway, key) == "0.02"
        for bad in ([], [{"tool": "calc"}] * 1001, "x"):
            refused = agent.post("/v1/charges", json={"charges": bad})
            assert refused.status_code == 422 and refused.json()["field"] == "charges"


def test_holds_paths(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "2")
    _, other_key = new_agent(gateway, "2")
    with gateway.agent(key) as agent, gateway.agent(other_key) as other:
        hold = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "1",
                                             "ttl_s": 60})
        assert hold.status_code == 201
        body = hold.json()
        assert body["amount"] == "1" and body["balance"] == "1"
        assert body["expires_at"].endswith("Z")
        hold_id = body["hold_id"]
        assert agent.get("/v1/balance").json()["held"] == "1"
        assert other.post(f"/v1/holds/{hold_id}/capture", json={"cost": "0.1"}).status_code \
            == 404
        assert other.post(f"/v1/holds/{hold_id}/release").status_code == 404
        over = agent.post(f"/v1/holds/{hold_id}/capture", json={"cost": "1.000001"})
        assert over.status_code == 422 and over.json()["field"] == "cost"
        released = agent.post(f"/v1/holds/{hold_id}/release")
        assert released.json() == {"released": "1", "balance": "2"}
        closed = agent.post(f"/v1/holds/{hold_id}/capture", json={"cost": "0.1"})
        assert closed.status_code == 409 and error_of(closed) == "hold_closed"
        assert agent.post("/v1/holds/hold_bogus/release").status_code == 404
        ttl = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "1",
                                            "ttl_s": 3601})
        assert ttl.status_code == 422 and ttl.json()["field"] == "ttl_s"
        poor = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "5"})
        assert poor.status_code == 402


def test_auth_errors(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1")
    missing = httpx.get(gateway.url + "/v1/balance")
    assert missing.status_code == 401 and error_of(missing) == "unauthorized"
    with gateway.agent(key) as agent:
        for method, path in [("GET", "/v1/agents"), ("POST", "/v1/agents"),
                             ("GET", "/v1/tools"), ("PUT", "/v1/tools/x"),
                             ("DELETE", "/v1/tools/x"), ("GET", "/v1/agents/x"),
                             ("POST", "/v1/agents/x/fund"), ("PATCH", "/v1/agents/x/limits"),
                             ("GET", "/v1/agents/x/limits"), ("POST", "/v1/agents/x/freeze"),
                             ("POST", "/v1/agents/x/unfreeze"), ("POST", "/v1/agents/x/keys"),
                             ("DELETE", "/v1/agents/x/keys/k")]:
            refused = agent.request(method, path, json={})
            assert refused.status_code == 403, (method, path)
            assert error_of(refused) == "forbidden"
    with gateway.admin() as admin:
        assert admin.get("/v1/balance").status_code == 403


def test_rate_limited_after_repeated_failures(gateway: Gateway) -> None:
    # From another loopback address, so the rest of the suite (127.0.0.1) is not limited.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=gateway.url, transport=transport,
                      headers={"authorization": "Bearer iou_wrong"}) as client:
        answers = [client.get("/v1/balance") for _ in range(25)]
    # The same wrong credential 10 times (its limit), then refused with Retry-After.
    assert [a.status_code for a in answers] == [401] * 10 + [429] * 15
    assert error_of(answers[-1]) == "rate_limited"
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
    with gateway.admin() as admin:
        assert admin.get("/v1/tools").status_code == 200


def test_operations_routes(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["ready"] is True and ready["checks"]["redis"] == "ok"
    _, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        agent.post("/v1/charge", json={"tool": "web_search"})
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'iou_charges_total{category="tool",outcome="ok"}' in metrics
    assert "iou_charge_latency_seconds_bucket" in metrics
    assert "iou_webhook_backlog" in metrics and "iou_redis_batch_factor" in metrics
    assert httpx.get(gateway.url + "/nowhere").json()["error"] == "not_found"
    assert httpx.delete(gateway.url + "/healthz").status_code == 405


def test_openapi_describes_every_route(gateway: Gateway) -> None:
    from gateway.api.app import served_routes

    doc = httpx.get(gateway.url + "/openapi.json").json()
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = served_routes()
    assert described == served


def test_ledger_route_pages_newest_first(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        for _ in range(3):
            agent.post("/v1/charge", json={"tool": "web_search"},
                       headers={"idempotency-key": unique("k")})
        agent.post("/v1/charge", json={"tool": "email_send", "metadata": {"to": "ops"}})
    with gateway.admin() as admin:
        deadline = time.monotonic() + 10
        while len(admin.get(f"/v1/agents/{name}/ledger").json()["entries"]) < 5:
            assert time.monotonic() < deadline, "the writer did not commit within 10 s"
            time.sleep(0.05)
        first = admin.get(f"/v1/agents/{name}/ledger", params={"limit": "2"}).json()
        assert [e["kind"] for e in first["entries"]] == ["charge", "charge"]
        newest = first["entries"][0]
        assert newest["tool"] == "email_send" and newest["metadata"] == {"to": "ops"}
        assert newest["amount"] == "0.02" and newest["balance_after"] == "0.83"
        rest = admin.get(f"/v1/agents/{name}/ledger",
                         params={"before": first["next_cursor"]}).json()
        assert [e["kind"] for e in rest["entries"]] == ["charge", "charge", "grant"]
        assert rest["next_cursor"] is None
        assert rest["entries"][-1]["amount"] == "1"
        only = admin.get(f"/v1/agents/{name}/ledger",
                         params={"kind": "charge", "tool": "web_search"}).json()["entries"]
        assert len(only) == 3 and all(e["idempotency_key"] for e in only)
        bad = admin.get(f"/v1/agents/{name}/ledger", params={"kind": "nope"})
        assert bad.status_code == 422 and bad.json()["field"] == "kind"
        assert admin.get("/v1/agents/nobody-zz/ledger").status_code == 404
