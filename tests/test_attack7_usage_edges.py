"""The usage routes at the end of the calendar: an `until` late on 9999-12-31 is rounded up
to its period, past the last instant a time can be written in (year 10000): that was a
500; it is 422 on `until`, as any other time out of range."""

from __future__ import annotations

import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent


@pytest.mark.parametrize("params", [
    {"until": "9999-12-31T23:59:59Z"}, {"until": "9999-12-31T23:30:00Z"},
    {"until": "9999-12-31T00:00:01Z", "period": "day"},
    {"until": "9999-12-31T23:59:59.5+00:00", "period": "hour"}])
def test_an_until_rounded_past_year_9999_is_422(gateway: Gateway,
                                                params: dict[str, str]) -> None:
    name, _ = new_agent(gateway)
    with gateway.admin() as admin:
        for path in ("/v1/usage", f"/v1/agents/{name}/usage"):
            answer = admin.get(path, params=params)
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == "until"


def test_the_last_whole_periods_of_9999_are_answered(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        hour = admin.get("/v1/usage", params={"until": "9999-12-31T23:00:00Z"})
        assert hour.status_code == 200, hour.text
        assert hour.json()["until"] == "9999-12-31T23:00:00.000Z"
        day = admin.get("/v1/usage", params={"until": "9999-12-31", "period": "day"})
        assert day.status_code == 200, day.text
