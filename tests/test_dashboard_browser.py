"""The dashboard page in a real browser: Debian's headless Chromium loads it
from a real ``redray dashboard`` process, runs its script, and the rendered
DOM must show the cluster's node, a running task by name and an actor, with
user data as text, never as markup.

Skipped only where Chromium is missing and ``REDRAY_REQUIRE_BROWSER`` is
unset (CI sets it: ``.ci/run`` installs Debian's ``chromium``)."""

from __future__ import annotations

import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from dashboard_util import browse, chromium, get, start_dashboard

import redray

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


@redray.remote
def hold(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"


@redray.remote
class Ledger:
    def total(self) -> int:
        return 0


class _Elements(HTMLParser):
    """The tags of a document and the text of each section, as parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.sections: dict[str, str] = {}
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "section":
            self._section = dict(attrs).get("id")
            self.sections[self._section or ""] = ""

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section] += data


def parse(dom: str) -> _Elements:
    parser = _Elements()
    parser.feed(dom)
    return parser


@pytest.fixture
def browser() -> str:
    return chromium()


@pytest.fixture
def running_cluster(cluster: Any, settings: Any, tmp_path: Path) -> Any:
    """The cluster with a named actor and two named tasks running (one named
    like markup), held until the test ends."""
    release = tmp_path / "release"
    ledger = Ledger.options(name="ledger").remote()
    assert redray.get(ledger.total.remote()) == 0
    refs = [
        hold.options(name="long-running-task").remote(str(release)),
        hold.options(name=HOSTILE).remote(str(release)),
    ]
    board = start_dashboard(settings.to_url())

    def both_running() -> bool:
        names = {t["name"] for t in get(board.url + "api/tasks/running")[1]["running"]}
        return {"long-running-task", HOSTILE} <= names

    try:
        wait_for(both_running, what="both tasks running")
        yield cluster, board
    finally:
        release.touch()
        redray.get(refs, timeout=30)
        board.stop()


def test_the_page_shows_the_node_a_running_task_and_an_actor(
    browser: str, running_cluster: Any
) -> None:
    node, board = running_cluster
    page = parse(browse(board.url))
    assert node.node_id in page.sections["nodes"]
    assert "alive" in page.sections["nodes"] and "CPU" in page.sections["nodes"]
    assert "long-running-task" in page.sections["running"]
    assert node.node_id[:12] in page.sections["running"]
    assert "ledger" in page.sections["actors"] and "ALIVE" in page.sections["actors"]
    assert "Ledger" in page.sections["actors"]
    assert "hold" in page.sections["tasks"]


def test_a_task_named_like_markup_is_shown_as_text(browser: str, running_cluster: Any) -> None:
    _node, board = running_cluster
    dom = browse(board.url)
    page = parse(dom)
    assert HOSTILE in page.sections["running"]  # the text, as the user named it
    assert "img" not in page.tags  # and no element made of it
    assert "&lt;img" in dom
    title = re.search(r"<title>(.*?)</title>", dom)
    assert title is not None and title.group(1) == "redray dashboard"


def test_the_page_says_when_the_cluster_cannot_be_reached(browser: str, persistent: Any) -> None:
    from redray.settings import Settings

    board = start_dashboard(Settings(host="127.0.0.1", port=persistent.port).to_url())
    try:
        persistent.kill()
        dom = browse(board.url, budget_ms=4000)
        page = parse(dom)
        status = re.search(r'id="status" class="status down">([^<]*)<', dom)
        assert status is not None and "cannot reach cluster" in status.group(1)
        assert page.tags.count("section") == 8
    finally:
        board.stop()


def test_a_screenshot_renders(browser: str, running_cluster: Any, tmp_path: Path) -> None:
    _node, board = running_cluster
    shot = tmp_path / "dashboard.png"
    browse(board.url, f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
