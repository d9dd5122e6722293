"""The console in a real browser: what a person sees on each page, live updates, time
travel, changes, the login, and keys and values that carry markup.

Each test loads pages in headless Chromium, checks the text a person would read, and saves
a screenshot (conftest.py says where). Every wait is bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

import evstate
from tests.console.conftest import Console, browser_errors, click, wait_for, wait_live

Shot = Callable[[WebDriver, str], Path]

XSS_KEY = "<script>window.__pwned = 'key'</script>"
XSS_VALUE = {"html": "<img src=x onerror=\"window.__pwned = 'value'\">", "s": "</pre><b>bold</b>"}


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def key_path(scope: str, key: str) -> str:
    return f"/scopes/{quote(scope, safe='')}/keys/{quote(key, safe='')}"


def fill(store: evstate.Store) -> dict[str, Any]:
    """Scopes users (120 keys: two pages), orders (with a TTL) and a key with history."""
    for i in range(120):
        store.set("users", f"user_{i:03d}", {"name": f"User {i}", "logins": i})
    revisions = []
    for n in range(1, 8):
        store.set("profiles", "alice", {"name": "Alice", "visits": n, "plan": "free"})
        revisions.append(store.revision)
    store.update("profiles", "alice", [{"type": "set", "path": "plan", "value": "pro"}])
    revisions.append(store.revision)
    time.sleep(0.01)  # later in time than every event before: ?at=<time> can tell them apart
    store.set("orders", "o-1", {"items": [1, 2], "total": 9.5}, ttl_ms=3_600_000)
    store.set("users", XSS_KEY, XSS_VALUE)
    return {"alice_revisions": revisions}


def no_xss(driver: WebDriver) -> None:
    assert driver.execute_script("return window.__pwned === undefined"), "markup ran as script"


def test_scopes_page_lists_scopes_with_key_counts(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    console = make_console()
    fill(console.store)
    browser.get(console.url("/"))
    wait_live(browser)
    rows = {
        row.find_element(By.CSS_SELECTOR, "td:first-child").text: row.find_element(
            By.CSS_SELECTOR, "td.num"
        ).text
        for row in browser.find_elements(By.CSS_SELECTOR, "#scopes tbody tr")
    }
    assert rows == {"orders": "1", "profiles": "1", "users": "121"}
    assert text(browser, "#scope-count") == "3" and text(browser, "#key-count") == "123"
    screenshot(browser, "01-scopes")
    assert browser_errors(browser) == []


def test_scope_page_pages_and_filters(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    console = make_console()
    fill(console.store)
    browser.get(console.url("/scopes/users"))
    keys = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#keys td.key-cell a")]
    assert len(keys) == 100 and keys[0] == XSS_KEY and keys[1] == "user_000"
    assert text(browser, "#total-keys") == "121"
    assert '"name":"User 0"' in text(browser, "#keys tbody tr:nth-child(2) .preview")
    no_xss(browser)
    screenshot(browser, "02-scope")
    browser.find_element(By.ID, "next-page").click()
    wait_for(browser, lambda d: "showing 101\u2013121" in text(d, "#listing-summary"), "page 2")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#keys td.key-cell a")][-1] == (
        "user_119"
    )
    browser.refresh()  # a cursor is single-use; the console keeps the page it built
    wait_for(
        browser, lambda d: "showing 101\u2013121" in text(d, "#listing-summary"), "page 2 again"
    )
    box = browser.find_element(By.ID, "filter")
    box.clear()
    box.send_keys("USER_11")
    box.submit()
    wait_for(browser, lambda d: d.find_elements(By.ID, "match-count"), "the filtered listing")
    matched = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#keys td.key-cell a")]
    assert matched == [f"user_{i}" for i in range(110, 120)]
    screenshot(browser, "03-scope-filtered")
    assert browser_errors(browser) == []


def test_key_page_shows_value_ttl_and_history(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    console = make_console()
    fill(console.store)
    browser.get(console.url(key_path("profiles", "alice")))
    value = json.loads(text(browser, "#value"))
    assert value == {"name": "Alice", "visits": 7, "plan": "pro"}
    assert text(browser, "#event-count") == "8"
    entries = browser.find_elements(By.CSS_SELECTOR, "#timeline li.event")
    assert len(entries) == 8
    newest = entries[0]
    assert "Updated" in newest.text
    assert [s.text for s in newest.find_elements(By.CSS_SELECTOR, ".ddel")] == [
        '-   "plan": "free",'
    ]
    assert [s.text for s in newest.find_elements(By.CSS_SELECTOR, ".dadd")] == [
        '+   "plan": "pro",'
    ]
    assert "Created" in entries[-1].text
    screenshot(browser, "04-key")
    browser.get(console.url(key_path("orders", "o-1")))
    wait_for(browser, lambda d: "expires in" in text(d, "#ttl"), "the TTL")
    countdown = text(browser, "#ttl .countdown")
    assert countdown.startswith(("59m", "1h")), countdown
    assert browser_errors(browser) == []


def test_time_travel_shows_past_values(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    console = make_console()
    revisions = fill(console.store)["alice_revisions"]
    third = revisions[2]
    browser.get(console.url(key_path("profiles", "alice") + f"?at={third}"))
    assert json.loads(text(browser, "#value"))["visits"] == 3
    assert f"revision {third}" in text(browser, "#past-banner")
    assert "event 3 of 8" in text(browser, "#slider-label")
    later = browser.find_elements(By.CSS_SELECTOR, "#timeline li.event.after")
    assert len(later) == 5  # the events after that point are dimmed
    screenshot(browser, "05-key-past")
    browser.find_element(By.CSS_SELECTOR, "button.step[data-step='-1']").click()  # the stepper
    wait_for(browser, lambda d: f"at={revisions[1]}" in d.current_url, "the previous event")
    assert json.loads(text(browser, "#value"))["visits"] == 2
    browser.execute_script(  # the slider: drag to the first event and let go
        "const s = document.getElementById('slider'); s.value = 0;"
        "s.dispatchEvent(new Event('change', {bubbles: true}));"
    )
    wait_for(browser, lambda d: f"at={revisions[0]}" in d.current_url, "the first event")
    assert json.loads(text(browser, "#value"))["visits"] == 1
    # A time works as well as a revision; the scopes and scope pages travel too.
    when = console.store.at(revision=revisions[0]).timestamp
    assert when is not None
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when / 1000)) + f".{when % 1000:03d}Z"
    browser.get(console.url("/?at=" + quote(iso)))
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#scopes td:first-child")]
    assert rows == ["profiles", "users"]  # no orders yet then
    browser.get(console.url(f"/scopes/users?at={revisions[0]}"))
    assert text(browser, "#total-keys") == "120"
    browser.get(console.url("/?at=yesterday"))
    assert "ISO 8601" in text(browser, "#message-text")
    assert browser_errors(browser, allowed=("400",)) == []


def test_pages_follow_changes_live(
    browser: WebDriver, make_console: Callable[..., Console]
) -> None:
    console = make_console()
    store = console.store
    fill(store)
    browser.get(console.url(key_path("profiles", "alice")))
    wait_live(browser)
    store.set("profiles", "alice", {"name": "Alice", "visits": 99})
    wait_for(browser, lambda d: '"visits": 99' in text(d, "#value"), "the new value")
    assert text(browser, "#event-count") == "9"
    browser.get(console.url("/"))
    wait_live(browser)
    store.set("invoices", "i-1", {"total": 1})
    wait_for(browser, lambda d: "invoices" in text(d, "#scopes"), "the new scope")
    browser.get(console.url("/scopes/orders"))  # one page: refreshed in place
    wait_live(browser)
    store.set("orders", "o-2", {"items": []})
    wait_for(browser, lambda d: "o-2" in text(d, "#keys"), "the new key")
    browser.get(console.url("/scopes/users"))  # several pages: a banner, no new listing
    wait_live(browser)
    store.set("users", "user_new", {})
    wait_for(browser, lambda d: d.find_element(By.ID, "stale").is_displayed(), "the banner")
    assert browser_errors(browser) == []


def test_triggers_page_shows_cursors_and_parked_events(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    store = evstate.open()
    fails = {"on": True}

    def audit(event: Any) -> None:
        if fails["on"]:
            raise RuntimeError("audit service <down>")

    store.trigger("audit", audit, scope="orders")
    store.trigger("mailer", lambda event: None)
    console = make_console(store, writes=True)
    store.set("orders", "o-1", {"total": 1})
    wait_for(browser, lambda d: store.trigger_status()["audit"]["parked"] == 1, "the parking")
    browser.get(console.url("/triggers"))
    # The page refreshes itself every second: read it in one go, from its script.
    rows = browser.execute_script(
        "const rows = {};"
        "for (const r of document.querySelectorAll('#triggers tbody tr'))"
        "  rows[r.dataset.trigger] = r.innerText;"
        "return [rows, document.getElementById('parked-total').innerText,"
        "  document.querySelector(\"[data-parked-for='audit']\").innerText];"
    )
    rows, parked_total, parked = rows
    assert set(rows) == {"audit", "mailer"}
    assert "scope=orders" in rows["audit"] and "audit service <down>" in rows["audit"]
    assert parked_total == "1"
    assert "orders / o-1" in parked
    screenshot(browser, "06-triggers")
    wait_live(browser)
    fails["on"] = False
    click(browser, "[data-parked-for='audit'] button[data-action='replay_parked']")
    wait_for(browser, lambda d: text(d, "#parked-total") == "0", "the replay")
    assert store.trigger_status()["audit"]["parked"] == 0
    assert browser_errors(browser) == []


def test_stats_page_charts_and_recovery_notes(
    browser: WebDriver,
    make_console: Callable[..., Console],
    screenshot: Shot,
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    with evstate.open(path) as store:
        for i in range(50):
            store.set("s", f"k{i}", {"i": i})
    segment = sorted(path.glob("*.log"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\x07torn")  # a torn tail: recovery truncates it and says so
    store = evstate.open(path)
    assert store.recovery_notes
    console = make_console(store)
    browser.get(console.url("/stats"))
    wait_live(browser)
    notes = text(browser, "#recovery-notes")
    assert "torn" in notes.lower() or "truncat" in notes.lower(), notes
    assert len(browser.find_elements(By.CSS_SELECTOR, ".chart canvas")) == 4
    for i in range(20):
        store.set("s", f"new{i}", i)
        time.sleep(0.1)  # over two seconds: the charts get a few samples with writes
    wait_for(browser, lambda d: text(d, "#stat-revision") == "70", "the new revision")
    wait_for(
        browser,
        lambda d: int(d.find_element(By.CSS_SELECTOR, ".chart").get_attribute("data-points")) >= 3,
        "three samples on the charts",
    )
    screenshot(browser, "07-stats")
    assert browser_errors(browser) == []


def test_markup_in_keys_and_values_is_shown_never_run(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    console = make_console(writes=True)
    store = console.store
    store.set(XSS_KEY, XSS_KEY, XSS_VALUE)
    store.set(XSS_KEY, XSS_KEY, {"changed": "<script>window.__pwned = 'diff'</script>"})
    for path in ("/", "/scopes/" + quote(XSS_KEY, safe=""), key_path(XSS_KEY, XSS_KEY)):
        browser.get(console.url(path))
        wait_live(browser)
        no_xss(browser)
    assert text(browser, "#key-name") == XSS_KEY
    assert "<script>window.__pwned = 'diff'</script>" in text(browser, "#value")
    assert "onerror" in text(browser, "#timeline")
    screenshot(browser, "08-markup-escaped")
    assert browser_errors(browser) == []


def test_console_writes_edit_create_and_delete(
    browser: WebDriver, make_console: Callable[..., Console]
) -> None:
    console = make_console(writes=True)
    store = console.store
    store.set("users", "bob", {"name": "Bob"})
    browser.get(console.url(key_path("users", "bob")))
    wait_live(browser)
    browser.find_element(By.CSS_SELECTOR, ".editor summary").click()
    area = browser.find_element(By.CSS_SELECTOR, ".editor textarea")
    area.clear()
    area.send_keys('{"name": "Bob", "admin": true}')
    browser.find_element(By.CSS_SELECTOR, ".editor button[type=submit]").click()
    wait_for(browser, lambda d: store.get("users", "bob") == {"name": "Bob", "admin": True}, "save")
    wait_for(browser, lambda d: '"admin": true' in text(d, "#value"), "the saved value shown")
    store.set("users", "bob", {"name": "Robert"})  # someone else writes meanwhile
    area.clear()
    area.send_keys('{"name": "Bobby"}')
    browser.find_element(By.CSS_SELECTOR, ".editor button[type=submit]").click()
    wait_for(browser, lambda d: "changed since" in text(d, "#toast"), "the conflict")
    assert store.get("users", "bob") == {"name": "Robert"}
    browser.find_element(By.CSS_SELECTOR, "button[data-action='delete']").click()
    browser.switch_to.alert.accept()
    wait_for(browser, lambda d: store.get("users", "bob") is None, "the delete")
    wait_for(browser, lambda d: d.find_elements(By.ID, "value-missing"), "the key shown absent")
    browser.get(console.url("/scopes/users"))
    browser.find_element(By.CSS_SELECTOR, ".new-key summary").click()
    browser.find_element(By.CSS_SELECTOR, ".new-key input[name=key]").send_keys("carol/1")
    area = browser.find_element(By.CSS_SELECTOR, ".new-key textarea")
    area.clear()
    area.send_keys('{"name": "Carol"}')
    browser.find_element(By.CSS_SELECTOR, ".new-key button[type=submit]").click()
    wait_for(browser, lambda d: "/keys/carol%2F1" in d.current_url, "the new key's page")
    assert store.get("users", "carol/1") == {"name": "Carol"}
    assert browser_errors(browser) == []


def test_read_only_console_offers_no_changes(
    browser: WebDriver, make_console: Callable[..., Console]
) -> None:
    console = make_console()
    console.store.set("users", "bob", {"name": "Bob"})
    browser.get(console.url(key_path("users", "bob")))
    wait_live(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, ".editor")
    assert text(browser, ".pill") == "read-only"
    reply = browser.execute_async_script(
        "const done = arguments[0];"
        "const ws = new WebSocket('ws://' + location.host + '/console/live');"
        "ws.onopen = () => ws.send(JSON.stringify({type: 'action', id: 1, action: 'delete',"
        " scope: 'users', key: 'bob'}));"
        "ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === 'reply') done(m); };"
    )
    assert reply["ok"] is False and reply["error"]["code"] == "console_read_only"
    assert console.store.get("users", "bob") == {"name": "Bob"}


def test_login_with_the_token(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    console = make_console(token="s3cret-token")
    console.store.set("users", "bob", 1)
    browser.get(console.url("/scopes/users"))
    wait_for(browser, lambda d: "/login" in d.current_url, "the login page")
    screenshot(browser, "09-login")
    browser.find_element(By.ID, "token").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "login-error").is_displayed(), "refusal")
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys("s3cret-token")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(browser, lambda d: d.current_url.endswith("/scopes/users"), "the page asked for")
    assert text(browser, "#total-keys") == "1"
    wait_live(browser)
    assert "evstate_session" not in browser.execute_script("return document.cookie")  # HttpOnly
    browser.find_element(By.CSS_SELECTOR, "a.logout").click()
    wait_for(browser, lambda d: "/login" in d.current_url, "the logout")
    browser.get(console.url("/"))
    wait_for(browser, lambda d: "/login" in d.current_url, "the login page again")
    assert browser_errors(browser, allowed=("401",)) == []


def test_unknown_page_is_a_readable_404(
    browser: WebDriver, make_console: Callable[..., Console], screenshot: Shot
) -> None:
    console = make_console()
    browser.get(console.url("/no/such/page"))
    assert text(browser, "h1") == "Not found"
    screenshot(browser, "10-not-found")


def test_pages_fit_a_narrow_window(
    browser: WebDriver, make_console: Callable[..., Console]
) -> None:
    console = make_console()
    fill(console.store)
    width = 420
    browser.set_window_size(width, 900)
    browser.get(console.url(key_path("profiles", "alice")))
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 80, f"the key page is {overflow}px wider than a {width}px window"
