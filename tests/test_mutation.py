"""The mutation runner (scripts/mutate_lua.py): its mutants, its equivalents list, and in the
slow suite a seeded random sample of mutants that must all be killed by the money tests."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "scripts" / "mutate_lua.py"
SAMPLE_SIZE = 100
SAMPLE_BUDGET_S = 840  # the CI job's budget for the sample (~10 minutes on 2 idle cores)


def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_lua", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_lua"] = module
    spec.loader.exec_module(module)
    return module


SNIPPET = """-- a comment: < > == 1 + 2 and redis.call('SET', 'k', 'v')
local s = 'a < b'
local function f(a, b)
  if a < b and b ~= 0 then
    redis.call('HSET', KEYS[1], 'f', a + 1)
  end
  local n = redis.call('INCR', KEYS[2])
  return -a, redis.call('GET', KEYS[1]), n - 2
end
"""


def test_every_kind_of_mutant_is_generated(tmp_path: Path) -> None:
    m = runner()
    path = tmp_path / "x.lua"
    path.write_text(SNIPPET)
    found = {(mut.code, mut.mutation) for mut in m.mutants_of(path)}
    assert found == {
        ("if a < b and b ~= 0 then", "if condition -> true"),
        ("if a < b and b ~= 0 then", "if condition -> false"),
        ("if a < b and b ~= 0 then", "'<' -> '<='"),
        ("if a < b and b ~= 0 then", "'and' -> 'or'"),
        ("if a < b and b ~= 0 then", "'~=' -> '=='"),
        ("if a < b and b ~= 0 then", "0 -> 1"),
        ("redis.call('HSET', KEYS[1], 'f', a + 1)", "1 -> 0"),
        ("redis.call('HSET', KEYS[1], 'f', a + 1)", "'+' -> '-'"),
        ("redis.call('HSET', KEYS[1], 'f', a + 1)", "remove redis.call('HSET')"),
        ("local n = redis.call('INCR', KEYS[2])", "remove redis.call('INCR')"),
        ("local n = redis.call('INCR', KEYS[2])", "2 -> 3"),
        ("return -a, redis.call('GET', KEYS[1]), n - 2", "drop unary '-'"),
        ("return -a, redis.call('GET', KEYS[1]), n - 2", "1 -> 0"),
        ("return -a, redis.call('GET', KEYS[1]), n - 2", "'-' -> '+'"),
        ("return -a, redis.call('GET', KEYS[1]), n - 2", "2 -> 3"),
    }
    by_kind = {mut.mutation: mut for mut in m.mutants_of(path)}
    removed = by_kind["remove redis.call('INCR')"].apply(SNIPPET)
    assert "local n = nil\n" in removed  # an expression becomes nil, a statement goes
    assert "redis.call('HSET'" not in by_kind["remove redis.call('HSET')"].apply(SNIPPET)
    forced = by_kind["if condition -> false"].apply(SNIPPET)
    assert "  if false then\n" in forced


def test_mutant_names_survive_edits_elsewhere(tmp_path: Path) -> None:
    m = runner()
    path = tmp_path / "x.lua"
    path.write_text(SNIPPET)
    before = [mut.key for mut in m.mutants_of(path)]
    path.write_text("-- one more line on top\n\n" + SNIPPET.replace("  local n", "\n  local n"))
    assert [mut.key for mut in m.mutants_of(path)] == before


def test_equivalents_name_existing_mutants_with_a_reason() -> None:
    m = runner()
    mutants = {mut.key for mut in m.all_mutants(ROOT / m.LUA_DIR_DEFAULT)}
    equivalents = m.read_equivalents(ROOT / m.EQUIVALENTS_DEFAULT)
    stale = sorted(k for k in equivalents if k not in mutants)
    assert stale == [], "equivalent mutants that no longer exist (update the list)"
    assert all(len(reason) > 10 for reason in equivalents.values())


def test_money_test_files_exist() -> None:
    m = runner()
    missing = [f for f in m.MONEY_TESTS if not (ROOT / f).exists()]
    assert missing == []


def test_lines_and_first_narrow_and_order_a_run(tmp_path: Path) -> None:
    m = runner()
    path = tmp_path / "x.lua"
    path.write_text(SNIPPET)
    mutants = m.mutants_of(path)
    on_4 = [mut for mut in mutants if m.in_lines(mut, ["x.lua:4"])]
    assert {mut.code for mut in on_4} == {"if a < b and b ~= 0 then"}
    spans = ["x.lua:4-5", "y.lua:1-99"]
    assert {mut.line for mut in mutants if m.in_lines(mut, spans)} == {4, 5}
    (tmp_path / "tests").mkdir()
    for f in m.MONEY_TESTS:
        (tmp_path / f).write_text("")
    files = [a for a in m.pytest_args(tmp_path, ["tests/test_walls.py"]) if a.endswith(".py")]
    assert files[0] == "tests/test_walls.py" and sorted(files) == sorted(m.MONEY_TESTS)


def test_walls_section_stops_at_the_next_section() -> None:
    m = runner()
    lua_dir = ROOT / m.LUA_DIR_DEFAULT
    lines = (lua_dir / "_lib.lua").read_text().splitlines()
    walls = m.walls_lines(lua_dir)
    assert "---- Walls beyond the balance" in lines[walls.start - 1]
    assert lines[walls.stop - 1].startswith(("-- ----", "local function hold_close"))
    assert not any(t.startswith("-- ----") for t in lines[walls.start:walls.stop - 1])


@pytest.mark.slow
def test_random_sample_of_mutants_is_killed() -> None:
    """A seeded random sample (IOU_MUTATION_SEED to replay one) of the non-equivalent mutants:
    every one must be killed by the money tests."""
    seed = int(os.environ.get("IOU_MUTATION_SEED") or random.SystemRandom().randrange(10**6))
    print(f"mutation sample seed: {seed}")
    cmd = [sys.executable, str(RUNNER), "--sample", str(SAMPLE_SIZE), "--seed", str(seed),
           "--jobs", "2", "--timeout", "90"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=SAMPLE_BUDGET_S)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0, (
        f"mutants survived (seed {seed}; replay: python scripts/mutate_lua.py --sample "
        f"{SAMPLE_SIZE} --seed {seed}):\n{tail}\n{proc.stderr[-2000:]}")
    assert f"seed {seed}" in proc.stdout
