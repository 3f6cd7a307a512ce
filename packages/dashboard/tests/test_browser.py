"""The dashboard in a real headless Chromium (Playwright), against a dashboard process and a worker process
sharing real storage (a SQLite file, Redis): what a person sees and does in the page reaches the worker."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(180)]


def open_page(browser: Any, url: str) -> Any:
    page = browser.new_page()
    page.errors = []  # uncaught script errors: none is expected
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.set_default_timeout(20_000)
    page.goto(url)
    page.wait_for_selector("main[data-loaded='1']")
    return page


def test_overview_lists_the_tasks(deployment: Any, browser: Any, wait_for: Any) -> None:
    page = open_page(browser, deployment.url)
    for name in ("tick", "nightly", "remind"):
        page.wait_for_selector(f"#tasks tr[data-task='{name}']")
    nightly = page.locator("#tasks tr[data-task='nightly']")
    assert "every day at 03:00" in nightly.inner_text()
    assert "Europe/Dublin" in nightly.inner_text()
    page.locator("#tasks tr[data-task='remind'] a").first.click()
    page.wait_for_selector("#instances tr[data-instance='alice']")
    assert "America/New_York" in page.locator("main").inner_text()
    assert "hunter2-secret" not in page.content()
    page.fill("#instance-name", "bob")
    page.click("#instance-name + button")
    page.wait_for_selector("#next-runs li")
    assert "every 15 minutes" in page.inner_text("main")
    page.click("#nav-problems")
    page.wait_for_selector("#scan-status")
    assert page.errors == []


def test_pausing_from_the_page_stops_runs_in_the_worker(deployment: Any, browser: Any, wait_for: Any) -> None:
    page = open_page(browser, deployment.url)
    page.fill("#token", deployment.token)
    page.once("dialog", lambda dialog: dialog.accept("maintenance window"))
    page.locator("#tasks tr[data-task='tick'] button[data-action='pause']").click()
    page.wait_for_selector("#tasks tr[data-task='tick'] .tag.paused")
    # A run claimed just before the pause may still finish: wait until the count stops moving, then check
    # that no run at all happens for three more of its (one-second) periods.
    settled = time.monotonic()
    last = deployment.runs("tick")
    while time.monotonic() - settled < 2.5:
        time.sleep(0.1)
        now = deployment.runs("tick")
        if now != last:
            last, settled = now, time.monotonic()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert deployment.runs("tick") == last, "the worker ran a paused task"
        time.sleep(0.1)
    assert "maintenance window" in deployment.tasks("pauses", "tick")
    page.locator("#tasks tr[data-task='tick'] button[data-action='resume']").click()
    wait_for(lambda: deployment.runs("tick") > last, "runs after resuming from the page")


def test_run_now_runs_once(deployment: Any, browser: Any, wait_for: Any) -> None:
    page = open_page(browser, deployment.url)
    page.fill("#token", deployment.token)
    assert deployment.runs("nightly") == 0
    page.locator("#tasks tr[data-task='nightly'] button[data-action='run']").click()
    page.wait_for_selector("#notice:not([hidden])")
    assert "queued" in page.inner_text("#notice")
    wait_for(lambda: deployment.runs("nightly") == 1, "the triggered run")
    # The next regular run is tomorrow at 03:00 Dublin time: nothing else may run meanwhile.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert deployment.runs("nightly") == 1
        time.sleep(0.1)
    page.goto(deployment.url + "#/task/nightly")
    page.wait_for_selector("#history tbody tr")
    assert "succeeded" in page.inner_text("#history")


def test_refused_action_shows_an_error(deployment: Any, browser: Any, wait_for: Any) -> None:
    page = open_page(browser, deployment.url)
    page.once("dialog", lambda dialog: dialog.accept(""))
    page.locator("#tasks tr[data-task='tick'] button[data-action='pause']").click()
    page.wait_for_selector("#error:not([hidden])")
    assert "token" in page.inner_text("#error")
    assert "no" in page.inner_text("#tasks tr[data-task='tick'] .paused-cell")
    assert "0 pause(s)" in deployment.tasks("pauses", "tick")
