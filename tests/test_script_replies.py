"""Each script's typed wrapper reads its reply by the names its header lists."""

from __future__ import annotations

import dataclasses

from gateway.store.calls import REPEATED_CLASSES, REPLY_CLASSES, Refused, ScriptCalls
from gateway.store.codes import Code
from gateway.store.resp import RedisConnection, parse_redis_url
from gateway.store.scripts import SCRIPT_NAMES, load_script, reply_shapes


def test_every_script_has_a_typed_reply() -> None:
    assert set(REPLY_CLASSES) == set(SCRIPT_NAMES)


def test_each_reply_class_has_the_fields_of_its_header() -> None:
    for name in SCRIPT_NAMES:
        shapes = load_script(name).shapes
        if name in REPEATED_CLASSES:  # {0, a, b, a, ...}: one group of fields repeated
            ok = shapes[Code.OK]
            group = ok[:ok.index(ok[0], 1)]
            assert tuple(f.name for f in dataclasses.fields(REPEATED_CLASSES[name])) == group
            continue
        fields = tuple(f.name for f in dataclasses.fields(REPLY_CLASSES[name])
                       if f.name != "replayed")
        assert fields == shapes[Code.OK], name
        if Code.REPLAY in shapes:
            # A replay answers what the first call answered (fund adds the amount).
            assert shapes[Code.REPLAY][:len(fields)] == fields, name
            assert "replayed" in {f.name for f in dataclasses.fields(REPLY_CLASSES[name])}


def test_header_shapes_are_read_by_name() -> None:
    header = ("--   code OK = 0: {0, balance, fixed (1 or 0)}\n"
              "--   code LIMIT_DAILY = 15: {15, max, spent, retry_after_s, category}\n"
              "--   code FROZEN = 11: {11}\n")
    assert reply_shapes(header) == {0: ("balance", "fixed"),
                                    15: ("max", "spent", "retry_after_s", "category"), 11: ()}


def test_a_refusal_carries_its_header_names() -> None:
    # The connection connects lazily: nothing is sent here.
    calls = ScriptCalls(RedisConnection(parse_redis_url("redis://127.0.0.1:1")), 16)
    refused = calls._refused("charge", Code.LIMIT_DAILY, [15, 500, 400, 60, b"search"])
    assert refused == Refused(Code.LIMIT_DAILY, {"max": 500, "spent": 400, "retry_after_s": 60,
                                                 "category": b"search"})
    assert refused.text("category") == "search" and refused.integer("max") == 500
