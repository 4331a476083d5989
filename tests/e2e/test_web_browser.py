"""The web UI in a real browser (Playwright with Debian's Chromium) against the shared
local stack: log in with the keyboard only, search by photo and see the right person
first, the persons pages (rename, merge) when the stack runs the persons service, and
every page screenshotted, free of console errors, labelled and fitting a phone.

Screenshots go to $FACEPIPE_TEST_ARTIFACTS/web when that is set, else to
tests/artifacts/web/ (ignored by git)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, WebLibrary

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
PAGES = ["/ui/search", "/ui/persons", "/ui/crawls", "/ui/audit", "/ui/system"]
# Every visible form control has a label (a <label for>, a wrapping <label> or aria-label).
UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
  .filter(el => el.tagName === 'BUTTON' ? !el.textContent.trim() && !el.getAttribute('aria-label')
                : !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.outerHTML.slice(0, 120))"""


@pytest.fixture(scope="module")
def artifacts() -> Path:
    base = Path(os.environ["FACEPIPE_TEST_ARTIFACTS"]) if os.environ.get("FACEPIPE_TEST_ARTIFACTS") else None
    folder = (base or ROOT / "tests" / "artifacts") / "web"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


class Console:
    """The console errors and page errors of one page, for a test to fail on."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))


@pytest.fixture
def page(browser, web_library: WebLibrary) -> Iterator:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.console = Console(page)
    yield page
    context.close()


def log_in_by_keyboard(page, lib: WebLibrary, role: str = "admin") -> None:
    """The login form with the keyboard only: the key field has the focus, Tab moves on,
    Enter submits."""
    page.goto(f"{lib.web.url}/login")
    assert page.evaluate("document.activeElement.id") == "key", "the key field has the focus"
    page.keyboard.type(lib.keys[role])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "tenant"
    page.keyboard.press("Control+A")
    page.keyboard.type(lib.tenant)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/search")


def test_log_in_and_search_by_photo(page, web_library: WebLibrary, artifacts: Path) -> None:
    lib = web_library
    page.goto(f"{lib.web.url}/login")
    page.screenshot(path=artifacts / "login.png", full_page=True)
    log_in_by_keyboard(page, lib)
    assert lib.keys["admin"] not in page.url and lib.keys["admin"] not in page.content()
    person, held_out = sorted(lib.held_out.items())[0]
    page.set_input_files("#image", str(held_out))
    # The preview appears once the browser has read the file and laid the image out: wait for it.
    page.wait_for_selector(".drop .preview", state="visible", timeout=10_000)
    preview = page.locator(".drop .preview")
    assert preview.evaluate("img => img.complete && img.naturalWidth > 0"), "the chosen photo is previewed"
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("ol.matches li")
    first = page.locator("ol.matches li").first
    assert first.locator(".count").inner_text().startswith(f"{person}/")
    assert "a match" in first.locator(".vs").inner_text()
    assert first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0"), "thumbnail loaded"
    page.screenshot(path=artifacts / "search.png", full_page=True)
    assert not page.console.errors, page.console.errors


def test_every_page_renders_labelled_and_fits_a_phone(page, web_library: WebLibrary, artifacts: Path) -> None:
    lib = web_library
    log_in_by_keyboard(page, lib)
    has_persons = "persons" in lib.web.stack["state"]["components"]
    for path in PAGES:
        if path == "/ui/persons" and not has_persons:
            continue
        page.console.errors.clear()
        for size, suffix in (({"width": 1200, "height": 900}, ""), (PHONE, "-phone")):
            page.set_viewport_size(size)
            answer = page.goto(f"{lib.web.url}{path}")
            assert answer.status == 200, path
            name = path.rsplit("/", 1)[-1]
            page.screenshot(path=artifacts / f"{name}{suffix}.png", full_page=True)
            assert page.evaluate(UNLABELLED_CONTROLS) == [], path
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= size["width"], f"{path} is {width}px wide on a {size['width']}px screen"
        assert not page.console.errors, (path, page.console.errors)


def test_the_persons_page_says_when_the_service_is_down(page, web_library: WebLibrary) -> None:
    lib = web_library
    if "persons" in lib.web.stack["state"]["components"]:
        pytest.skip("the stack runs the persons service")
    log_in_by_keyboard(page, lib)
    answer = page.goto(f"{lib.web.url}/ui/persons")
    assert answer.status == 503 and "persons service is unavailable" in page.content()


def test_rename_and_merge_persons(page, web_library: WebLibrary, artifacts: Path) -> None:
    lib = web_library
    if "persons" not in lib.web.stack["state"]["components"]:
        pytest.skip("the stack runs no persons service")
    log_in_by_keyboard(page, lib)
    page.goto(f"{lib.web.url}/ui/persons")
    tiles = page.locator("ul.persons li")
    before = tiles.count()
    assert before >= 2
    page.screenshot(path=artifacts / "persons.png", full_page=True)
    # Rename the first person.
    tiles.first.locator("a.person-link").click()
    page.fill("#name", "Renamed In Browser")
    page.click("#rename-form button[type=submit]")
    page.wait_for_selector("p.ok")
    assert page.locator("h1").inner_text().startswith("Renamed In Browser")
    page.screenshot(path=artifacts / "person.png", full_page=True)
    page.goto(f"{lib.web.url}/ui/persons")
    assert "Renamed In Browser" in page.locator("ul.persons").inner_text()
    # Merge the first two persons: the gallery has one fewer, the name stays.
    counts = [int(t.split()[0]) for t in page.locator("ul.persons li .count").all_inner_texts()[:2]]
    boxes = page.locator("ul.persons input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("#merge-form button[type=submit]")
    page.wait_for_selector("p.ok")
    assert page.locator("ul.persons li").count() == before - 1
    merged = page.locator("ul.persons li", has_text="Renamed In Browser")
    assert int(merged.locator(".count").inner_text().split()[0]) == sum(counts)
    assert not page.console.errors, page.console.errors
