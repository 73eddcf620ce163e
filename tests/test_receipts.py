"""Signed receipts: Ed25519 JWS over the charge, checked offline against the gateway's JWKS;
any altered claim, header or signature fails; a rotated-out key still verifies its receipts."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, load_settings
from gateway.metering.engine import Engine
from gateway.metering.ids import uuid7
from gateway.receipts import (
    ReceiptInvalid,
    ReceiptSigner,
    load_signer,
    receipt_at,
    sign_receipt,
    verify_receipt,
)
from gateway.sdk import Client
from tests.gateway_proc import Gateway
from tests.helpers import T, setup_catalog
from tests.http_helpers import error_of, new_agent, recording_upstream, unique
from tests.ledger_helpers import store_for, writer_for

SEED_A = base64.urlsafe_b64encode(b"a" * 32).rstrip(b"=").decode()
SEED_B = base64.urlsafe_b64encode(b"b" * 32).rstrip(b"=").decode()
LEDGER_WAIT_S = 20


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def a_receipt(signer: ReceiptSigner, task: str | None = "task_1") -> str:
    return sign_receipt(signer, charge_id=uuid7(), agent="buyer", tool="web_search",
                        cost_micros=50_000, balance_after_micros=9_950_000, task=task)


def with_claims(token: str, **changes: Any) -> str:
    """The token with its claims part rewritten, header and signature left as they were."""
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims.update(changes)
    return ".".join([header, b64(json.dumps(claims).encode()), signature])


def test_a_receipt_verifies_and_says_what_was_paid() -> None:
    signer = ReceiptSigner([SEED_A])
    token = a_receipt(signer)
    claims = verify_receipt(token, signer.jwks())
    assert {k: v for k, v in claims.items() if k not in ("charge_id", "at")} == {
        "agent": "buyer", "tool": "web_search", "cost": "0.05", "balance_after": "9.95",
        "task": "task_1"}
    header = json.loads(unb64(token.split(".")[0]))
    assert header["alg"] == "EdDSA" and header["kid"] == signer.kid
    at = datetime.fromisoformat(claims["at"].replace("Z", "+00:00"))
    assert abs(at.timestamp() - time.time()) < 60


@pytest.mark.parametrize(("claim", "value"), [
    ("charge_id", "01900000-0000-7000-8000-000000000000"), ("agent", "someone-else"),
    ("tool", "buy"), ("cost", "0.5"), ("balance_after", "99"),
    ("at", "2020-01-01T00:00:00.000Z"), ("task", None), ("extra", "x")])
def test_any_altered_claim_fails(claim: str, value: Any) -> None:
    signer = ReceiptSigner([SEED_A])
    with pytest.raises(ReceiptInvalid):
        verify_receipt(with_claims(a_receipt(signer), **{claim: value}), signer.jwks())


def test_forged_signature_header_or_shape_fails() -> None:
    signer, other = ReceiptSigner([SEED_A]), ReceiptSigner([SEED_B])
    token = a_receipt(signer)
    header, payload, signature = token.split(".")
    flipped = bytearray(unb64(signature))
    flipped[0] ^= 1
    forged = [
        ".".join([header, payload, b64(bytes(flipped))]),
        a_receipt(other),  # signed by a key the gateway does not publish
        ".".join([b64(b'{"alg":"none","kid":"x"}'), payload, ""]),
        ".".join([header, payload]),
        "not a receipt",
    ]
    for bad in forged:
        with pytest.raises(ReceiptInvalid):
            verify_receipt(bad, signer.jwks())


def test_a_rotated_out_key_still_verifies_its_receipts() -> None:
    old = ReceiptSigner([SEED_A])
    rotated = ReceiptSigner([SEED_B, SEED_A])  # the new key signs; the old one stays listed
    assert rotated.kid != old.kid
    assert [k["kid"] for k in rotated.jwks()["keys"]] == [rotated.kid, old.kid]
    assert verify_receipt(a_receipt(old), rotated.jwks())["tool"] == "web_search"
    new_token = a_receipt(rotated)
    assert json.loads(unb64(new_token.split(".")[0]))["kid"] == rotated.kid
    with pytest.raises(ReceiptInvalid):
        verify_receipt(new_token, old.jwks())


def test_jwks_is_okp_ed25519_with_rfc7638_thumbprints() -> None:
    for jwk in ReceiptSigner([SEED_A, SEED_B]).jwks()["keys"]:
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
        assert len(unb64(jwk["x"])) == 32 and "d" not in jwk
        members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": jwk["x"]},
                             separators=(",", ":"), sort_keys=True)
        assert jwk["kid"] == b64(hashlib.sha256(members.encode()).digest())


def test_the_key_comes_from_the_environment_or_a_generated_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="IOU_RECEIPT_KEY"):
        load_settings({"IOU_RECEIPT_KEY": "too-short"})
    given = load_signer(load_settings({"IOU_RECEIPT_KEY": f"{SEED_B}, {SEED_A}",
                                       "IOU_DATA_DIR": str(tmp_path / "env")}))
    assert given.kid == ReceiptSigner([SEED_B]).kid
    assert not (tmp_path / "env" / "receipt_key").exists()
    settings = load_settings({"IOU_DATA_DIR": str(tmp_path / "gen")})
    first = load_signer(settings)
    path = tmp_path / "gen" / "receipt_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signer(settings).kid == first.kid  # kept, not generated again


def test_at_is_the_time_in_the_charge_id() -> None:
    # 0x019000000000 ms after the epoch
    assert receipt_at("01900000-0000-7000-8000-000000000000") == "2024-06-10T02:35:18.400Z"
    assert receipt_at("hold_01900000000070008000000000000000")[:4] == "2024"
    assert receipt_at("not-a-uuid", fallback_ms=0) == "1970-01-01T00:00:00.000Z"


# -- over HTTP ----------------------------------------------------------------------------


def _sdk(gw: Gateway, key: str) -> Client:
    return Client(gw.url, key, max_retries=0)


def test_charge_signs_only_when_asked(gateway: Gateway) -> None:
    name, key = new_agent(gateway)
    with gateway.agent(key) as agent, _sdk(gateway, key) as sdk:
        plain = agent.post("/v1/charge", json={"tool": "web_search"})
        assert plain.status_code == 200 and "receipt" not in plain.json()
        refused = agent.post("/v1/charge", json={"tool": "web_search"},
                             headers={"X-IOU-Receipt": "yes"})
        assert refused.status_code == 422 and error_of(refused) == "invalid_request"
        asked = agent.post("/v1/charge", json={"tool": "web_search"},
                           headers={"X-IOU-Receipt": "true"})
        assert asked.status_code == 200, asked.text
        body = asked.json()
        claims = sdk.verify_receipt(body["receipt"])
        assert claims["charge_id"] == body["charge_id"] and claims["agent"] == name
        assert (claims["tool"], claims["cost"], claims["task"]) == ("web_search", "0.05", None)
        assert claims["balance_after"] == body["balance"] == "9.9"  # the 422 charged nothing


def test_batch_and_capture_sign_when_asked(gateway: Gateway) -> None:
    _, key = new_agent(gateway)
    ask = {"X-IOU-Receipt": "true"}
    with gateway.agent(key) as agent, _sdk(gateway, key) as sdk:
        batch = agent.post("/v1/charges", headers=ask, json={"charges": [
            {"tool": "web_search"}, {"tool": "no_such_tool"}, {"tool": "calc"}]})
        first, missing, free = batch.json()["results"]
        assert sdk.verify_receipt(first["receipt"])["charge_id"] == first["charge_id"]
        assert "receipt" not in missing and missing["error"] == "not_found"
        assert sdk.verify_receipt(free["receipt"])["cost"] == "0"
        task = agent.post("/v1/tasks", json={"budget": "1"}).json()["task_id"]
        hold = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "0.5",
                                             "task": task}).json()
        captured = agent.post(f"/v1/holds/{hold['hold_id']}/capture", headers=ask,
                              json={"cost": "0.2"})
        assert captured.status_code == 200, captured.text
        claims = sdk.verify_receipt(captured.json()["receipt"])
        assert (claims["charge_id"], claims["tool"], claims["cost"], claims["task"]) == (
            captured.json()["charge_id"], "llm_summarize", "0.2", task)
        assert claims["balance_after"] == captured.json()["balance"]


def _ledger_receipt(client: httpx.Client, charge_id: str) -> httpx.Response:
    """GET /v1/receipts/{id}, polled until the ledger writer has the charge."""
    deadline = time.monotonic() + LEDGER_WAIT_S
    while True:
        answer = client.get(f"/v1/receipts/{charge_id}")
        if answer.status_code != 404 or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def test_any_charge_of_the_ledger_gets_the_same_receipt(gateway: Gateway) -> None:
    _, key = new_agent(gateway)
    _, other_key = new_agent(gateway)
    with gateway.agent(key) as agent, gateway.agent(other_key) as other, \
            gateway.admin() as admin, _sdk(gateway, key) as sdk:
        task = agent.post("/v1/tasks", json={"budget": "1"}).json()["task_id"]
        charged = agent.post("/v1/charge", json={"tool": "web_search", "task": task},
                             headers={"X-IOU-Receipt": "true"}).json()
        later = _ledger_receipt(agent, charged["charge_id"])
        assert later.status_code == 200, later.text
        # Signed again from the ledger row: the very same claims as on the answer.
        assert sdk.verify_receipt(later.json()["receipt"]) == sdk.verify_receipt(
            charged["receipt"])
        assert admin.get(f"/v1/receipts/{charged['charge_id']}").status_code == 200
        assert error_of(other.get(f"/v1/receipts/{charged['charge_id']}")) == "forbidden"
        unknown = agent.get(f"/v1/receipts/{uuid7()}")
        assert unknown.status_code == 404 and error_of(unknown) == "not_found"
    keys = httpx.get(gateway.url + "/v1/receipts/keys")  # public: no token
    assert keys.status_code == 200 and keys.json()["keys"][0]["crv"] == "Ed25519"


def test_invoke_sends_a_receipt_upstream_and_answers_with_one(gateway: Gateway) -> None:
    _, key = new_agent(gateway)
    tool = unique("paid").replace("-", "_")
    with recording_upstream("/") as (url, upstream), gateway.admin() as admin, \
            gateway.agent(key) as agent, _sdk(gateway, key) as sdk:
        assert admin.put(f"/v1/tools/{tool}", json={"price": "0.3", "category": "tool",
                                                    "upstream": url}).status_code == 200
        invoked = agent.post(f"/v1/tools/{tool}/invoke", json={"q": 1})
        assert invoked.status_code == 200, invoked.text
        # What the provider checks:
        paid = sdk.verify_receipt(upstream.header("x-iou-receipt")[0] or "")
        assert paid["charge_id"].startswith("hold_")
        assert (paid["tool"], paid["cost"]) == (tool, "0.3")
        answered = sdk.verify_receipt(invoked.headers["x-iou-receipt"])
        assert answered["charge_id"] == invoked.headers["x-iou-charge-id"]
        assert (answered["cost"], answered["balance_after"]) == ("0.3", "9.7")
        assert paid["balance_after"] == answered["balance_after"]  # fixed price: the same


def test_iou_receipt_verify(gateway: Gateway) -> None:
    _, key = new_agent(gateway)
    with gateway.agent(key) as agent:
        token = agent.post("/v1/charge", json={"tool": "web_search"},
                           headers={"X-IOU-Receipt": "true"}).json()["receipt"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env["IOU_URL"] = gateway.url

    def iou(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    good = iou("receipt", "verify", token)
    assert good.returncode == 0, good.stderr
    assert "valid receipt" in good.stdout and "web_search" in good.stdout
    as_json = json.loads(iou("--json", "receipt", "verify", token).stdout)
    assert as_json["valid"] is True and as_json["claims"]["cost"] == "0.05"
    bad = iou("receipt", "verify", with_claims(token, cost="0.01"))
    assert bad.returncode == 1 and "does not verify" in bad.stderr


async def test_both_ledgers_sign_a_charge_from_its_row(real_engine: Engine, ledger_url: str
                                                       ) -> None:
    """What GET /v1/receipts/{charge_id} reads: one row by id, in SQLite and PostgreSQL."""
    from gateway.api.context import Context
    from gateway.api.receipts import from_entry

    await setup_catalog(real_engine)
    await real_engine.create_agent("signed", grant_micros=5 * T)
    charged = await real_engine.charge("signed", "web_search", metadata={"q": "ü"})
    store = store_for(ledger_url)
    try:
        await writer_for(real_engine, store).drain()
        entry = await store.entry(charged.charge_id)
        assert entry is not None and entry.kind == "charge" and entry.agent == "signed"
        assert await store.entry(uuid7()) is None
        signer = ReceiptSigner([SEED_A])
        ctx = Context(real_engine, load_settings({}), None, None, None, store,  # type: ignore[arg-type]
                      receipts=signer)
        claims = verify_receipt(from_entry(ctx, entry), signer.jwks())
        assert (claims["charge_id"], claims["cost"], claims["tool"]) == (
            charged.charge_id, "0.05", "web_search")
        assert claims["balance_after"] == "4.95"
    finally:
        await store.close()
