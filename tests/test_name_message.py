"""A bad name's message is one sentence that lists the allowed characters unambiguously (it
ended in ". ." before: the dot allowed, then the sentence's own)."""

from __future__ import annotations

import pytest

from gateway.metering.errors import InvalidRequest
from gateway.metering.limits import check_name


@pytest.mark.parametrize("bad", ["", "UPPER", "x" * 65, "a b", "é"])
def test_a_bad_name_says_which_characters_are_allowed(bad: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_name("agent", bad)
    message = str(caught.value)
    assert message == ("agent must be 1 to 64 characters, each a-z, 0-9, - (hyphen), _ or . "
                       "(dot)."), message
    assert ".." not in message
