"""Fixtures of the console tests: servers on loopback, a real headless Chromium, screenshots.

The browser is Debian's ``chromium`` driven through Debian's ``chromium-driver`` by
Selenium (never a downloaded browser: Selenium Manager is bypassed by naming both binaries).
Without them the browser tests FAIL with a message saying what to install; they never
skip (``.ci/run`` installs both).

Screenshots go to the test's temporary folder and are also copied to
``$EVSTATE_CONSOLE_SHOTS`` (default ``/tmp/console-shots``) for people to look at.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

import evstate
from evstate.server.app import BackgroundServer

WAIT = 10.0  # seconds any browser condition may take before the test fails
CHROMIUM = os.environ.get("EVSTATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EVSTATE_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = Path(os.environ.get("EVSTATE_CONSOLE_SHOTS", "/tmp/console-shots"))


class Console:
    """A server with its console, over ``store``; ``base`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, store: evstate.Store, background: BackgroundServer) -> None:
        self.store = store
        self.background = background
        self.base = (
            background.server.console_url.rstrip("/") if background.server.console_url else ""
        )
        self.ws_url = background.url

    def url(self, path: str = "/") -> str:
        return self.base + path


@pytest.fixture
def make_console() -> Iterator[Callable[..., Console]]:
    """``make_console(store=None, writes=False, token=None)``: a served store (memory by
    default), stopped and closed at the end."""
    started: list[Console] = []

    def factory(
        store: evstate.Store | None = None, *, writes: bool = False, token: str | None = None
    ) -> Console:
        store = store if store is not None else evstate.open()
        background = BackgroundServer(store, auth_token=token, console_writes=writes).start()
        console = Console(store, background)
        started.append(console)
        return console

    yield factory
    for console in started:
        console.background.stop(grace=2.0)
        console.store.close()


def _missing_browser() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if not missing:
        return None
    return (
        f"the browser tests need {' and '.join(missing)}: install Debian's packages with "
        "`apt-get install -y chromium chromium-driver` (.ci/run does), or point "
        "EVSTATE_CHROMIUM / EVSTATE_CHROMEDRIVER at them"
    )


@pytest.fixture(scope="session")
def chromium() -> Iterator[WebDriver]:
    """One headless Chromium for the session (each test starts from a clean cookie jar)."""
    problem = _missing_browser()
    if problem:
        pytest.fail(problem)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.fail(f"could not start headless Chromium ({CHROMIUM}, {CHROMEDRIVER}): {exc.msg}")
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[WebDriver]:
    """The session's browser, with no cookies and an empty console log."""
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.get_log("browser")  # drop what earlier tests left
    chromium.set_window_size(1280, 900)
    yield chromium
    chromium.get("about:blank")  # close the page's live socket before its server stops


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """Wait (bounded by ``WAIT``) until ``condition(driver)`` is truthy; fail saying ``what``."""
    # A live page swaps its live part in: an element found a moment ago may be gone.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, WAIT, 0.05, ignored_exceptions=ignored).until(condition)
    except Exception as exc:  # TimeoutException, or the condition kept raising
        pytest.fail(f"timed out after {WAIT} s waiting for {what} ({type(exc).__name__})")


def click(driver: WebDriver, css: str) -> None:
    """Click the element ``css`` finds, again if a live refresh replaced it meanwhile."""

    def clicked(d: WebDriver) -> bool:
        d.find_element("css selector", css).click()
        return True

    wait_for(driver, clicked, f"a click on {css}")


def wait_live(driver: WebDriver) -> None:
    """Wait until the page's live socket is connected (the green dot)."""
    wait_for(
        driver,
        lambda d: "on" in (d.find_element("id", "live-dot").get_attribute("class") or ""),
        "the live connection",
    )


def browser_errors(driver: WebDriver, allowed: tuple[str, ...] = ()) -> list[str]:
    """Console errors of the page (script errors, CSP refusals, failed loads), except
    those containing one of ``allowed``."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not any(a in entry["message"] for a in allowed)
    ]


@pytest.fixture
def screenshot(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[WebDriver, str], Path]:
    """``screenshot(driver, name)``: the whole page as PNG, in tmp_path and in ``SHOTS``."""

    def take(driver: WebDriver, name: str) -> Path:
        height = driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
        )
        driver.set_window_size(1280, max(900, min(int(height) + 120, 4000)))
        time.sleep(0.2)  # let the layout (and the charts) follow the new size
        path = tmp_path / f"{name}.png"
        driver.save_screenshot(str(path))
        driver.set_window_size(1280, 900)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
        return path

    return take
