"""Locust scenario: hundreds of agents with their own budgets and a realistic mix.

Each simulated user is one agent: web searches and page reads, LLM calls through a hold
and a capture, emails, an occasional commerce purchase; retries reuse their
Idempotency-Key; agents run dry and keep getting `balance_insufficient`. Provisioning
happens at test start (IOU_ADMIN_TOKEN, or the token file of IOU_DATA_DIR). Run headless
as loadtests/README.md says, then `python -m loadtests.check_locust` prints PASS or FAIL.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
from locust import FastHttpUser, between, events, task

AGENTS = int(os.environ.get("IOU_LOCUST_AGENTS", "300"))
TOOLS = {"web_search": ("0.05", "tool", "fixed"), "web_browse": ("0.12", "tool", "fixed"),
         "llm_summarize": ("0.08", "llm", "variable"), "email_send": ("0.02", "tool", "fixed"),
         "buy_item": ("3", "commerce", "fixed")}
KEYS_FILE = Path(os.environ.get("IOU_LOCUST_KEYS", "locust-agents.txt"))
_keys: list[tuple[str, str]] = []


def admin_token() -> str:
    token = os.environ.get("IOU_ADMIN_TOKEN")
    if token:
        return token
    return (Path(os.environ.get("IOU_DATA_DIR", ".iou")) / "admin_token").read_text().strip()


@events.test_start.add_listener
def provision(environment: Any, **_: Any) -> None:
    """Create the tools and AGENTS agents with budgets from 1 to 20 tokens."""
    host = environment.host
    client = httpx.Client(base_url=host, timeout=30,
                          headers={"authorization": f"Bearer {admin_token()}"})
    for name, (price, category, pricing) in TOOLS.items():
        client.put(f"/v1/tools/{name}", json={"price": price, "category": category,
                                              "pricing": pricing}).raise_for_status()
    run = uuid.uuid4().hex[:6]
    rng = random.Random(run)
    for i in range(AGENTS):
        name = f"locust-{run}-{i}"
        budget = str(rng.randint(1, 20))
        created = client.post("/v1/agents", json={"name": name, "grant": budget})
        created.raise_for_status()
        _keys.append((name, created.json()["api_key"]))
    KEYS_FILE.write_text("\n".join(f"{n} {k}" for n, k in _keys) + "\n")
    client.close()


class Agent(FastHttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.name, self.key = _keys[random.randrange(len(_keys))]
        self.auth = {"authorization": f"Bearer {self.key}"}

    def _charge(self, body: dict[str, Any], retries: int = 0) -> None:
        headers = {**self.auth, "idempotency-key": uuid.uuid4().hex}
        for _ in range(retries + 1):  # a retry reuses its key: charged once at most
            with self.client.post("/v1/charge", json=body, headers=headers,
                                  name="/v1/charge", catch_response=True) as response:
                if response.status_code in (200, 402, 403, 429):
                    response.success()  # refusals are the product working
                else:
                    response.failure(f"{response.status_code}")

    @task(10)
    def search(self) -> None:
        self._charge({"tool": "web_search"}, retries=random.random() < 0.1)

    @task(6)
    def browse(self) -> None:
        self._charge({"tool": "web_browse"})

    @task(4)
    def summarize(self) -> None:
        with self.client.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "0.5"},
                              headers=self.auth, name="/v1/holds",
                              catch_response=True) as response:
            if response.status_code != 201:
                response.success()
                return
            hold_id = response.json()["hold_id"]
        cost = f"0.{random.randint(1, 49):02d}"
        self.client.post(f"/v1/holds/{hold_id}/capture", json={"cost": cost},
                         headers=self.auth, name="/v1/holds/[id]/capture")

    @task(3)
    def email(self) -> None:
        self._charge({"tool": "email_send"})

    @task(1)
    def buy(self) -> None:
        self._charge({"tool": "buy_item"})
