"""The project's documents stand on their own: every relative link and anchor in README.md
and docs/*.md resolves inside the repository, the runbook sections that alerting rules link
to exist, the README carries no session diary, and no file points outside the repository to
documents a clone does not have."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gateway.sdk.codes import SERVER_ERRORS

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The sections that alerting rules' runbook annotations point to (docs/operations.md#...).
RUNBOOK_ANCHORS = ("ledger-lag", "dead-letters", "reconcile-drift", "writer-restarts",
                   "unavailable-503", "webhook-backlog", "redis-memory", "failed-auth-surge")
# Built from parts so that this file does not match its own search.
OUTSIDE = ("../" + "shared", "CONTRACT" + ".md", "DESIGN" + ".md")
# Tools' and runs' own folders (dot-folders are skipped too), not the project's files.
SKIPPED_DIRS = {"node_modules", "__pycache__", "build", "dist", "test-artifacts"}
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: its headings' slugs (repeats numbered) and ids."""
    text = FENCE.sub("", path.read_text())
    found: set[str] = set()
    for heading in HEADING.findall(text):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


def links(path: Path) -> list[str]:
    """Link targets outside code blocks and inline code."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    return LINK.findall(text)


def resolves(page: Path, target: str, root: Path) -> bool:
    """Whether a relative link of ``page`` names a file inside ``root`` (and its anchor)."""
    file_part, _, anchor = target.partition("#")
    resolved = (page.parent / file_part).resolve() if file_part else page
    if not resolved.is_relative_to(root) or not resolved.exists():
        return False
    return not anchor or resolved.suffix != ".md" or anchor in anchors(resolved)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Relative links of ``page`` that do not resolve (absolute URLs are not followed)."""
    return [target for target in links(page)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
            and not resolves(page, target, root)]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_documents_exist_and_the_readme_links_to_them() -> None:
    readme_links = set(links(ROOT / "README.md"))
    for name in ("api.md", "operations.md", "design.md", "benchmarks.md"):
        assert (ROOT / "docs" / name).is_file()
        assert f"docs/{name}" in readme_links


def test_the_runbook_sections_exist() -> None:
    assert set(RUNBOOK_ANCHORS) <= anchors(ROOT / "docs" / "operations.md")


def test_the_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    assert slug("The Redis client (`gateway/store/resp.py`)") == (
        "the-redis-client-gatewaystoreresppy")
    assert slug("Unavailable (503)") == "unavailable-503"
    (tmp_path / "ops.md").write_text("# Ledger lag\n```\n# not a heading\n```\n")
    probe = tmp_path / "page.md"
    probe.write_text("[a](ops.md#ledger-lag) [b](ops.md#not-a-heading) [c](missing.md)\n"
                     "[d](#top) [e](../outside.md) `[f](missing-too.md)`\n# Top\n")
    assert broken_links(probe, tmp_path) == ["ops.md#not-a-heading", "missing.md",
                                             "../outside.md"]


def test_the_readme_is_a_manual_not_a_diary() -> None:
    readme = (ROOT / "README.md").read_text().lower()
    for phrase in ("previous session", "this session", "fixed late", "beyond the previous"):
        assert phrase not in readme
    assert "open http" not in readme  # macOS-only `open`


def repository_files() -> list[Path]:
    files: list[Path] = []
    for directory, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")
                   and not d.endswith(".egg-info")]
        files.extend(Path(directory) / name for name in names)
    return files


def test_nothing_points_outside_the_repository() -> None:
    offenders = []
    for path in repository_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        offenders += [f"{path.relative_to(ROOT)}: {needle}" for needle in OUTSIDE
                      if needle in text]
    assert offenders == []


def documented_errors() -> set[tuple[int, str]]:
    """(status, code) of each row of docs/api.md's error table."""
    text = (ROOT / "docs" / "api.md").read_text()
    return {(int(status), code)
            for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", text, re.MULTILINE)}


def test_every_error_the_gateway_answers_is_documented_with_its_status() -> None:
    server = "".join(p.read_text() for p in (ROOT / "gateway").rglob("*.py")
                     if "sdk" not in p.relative_to(ROOT).parts)
    listed = {(status, e.code) for e in SERVER_ERRORS for status in e.statuses}
    # A code of the shared list that no server module names is not answered (yet).
    answered = {(status, code) for status, code in listed if f'"{code}"' in server}
    assert answered - documented_errors() == set()
    assert documented_errors() - listed == set()
