"""The app's page loads nothing from another host: it works offline.

Panel's templates and widgets reach for other hosts unless told not to: the Fast design links
Open Sans from ``fonts.googleapis.com``, and a widget icon given by *name* makes Bokeh fetch the
Tabler webfont from ``cdn.jsdelivr.net`` (icons must be inline SVG). Offline, each is a
``net::ERR_NAME_NOT_RESOLVED`` in the browser's console. These tests serve the app in-process on a
loopback port, record every request of a real page (Debian's Chromium through Playwright) while
its tabs are opened, and fail on any request to another host, naming the URLs; the page's HTML is
also checked over plain HTTP, which needs no browser.
"""

from __future__ import annotations

import html.parser
import urllib.request
from urllib.parse import urljoin, urlsplit

import pytest

from tests.app.browser import TIMEOUT_MS, launch_chromium, playwright_or_skip, serve_sessions, wait

pytestmark = [
    # Panel 1.9 announces renames for 2.0 (name -> label, button_type -> color); the app keeps the
    # names that work across the supported Panel versions.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

#: A text of the Results tab before (False) and after (True) a run.
RESULTS_TEXT = {False: "Results appear here once a run has finished.", True: "Meteogram"}
RUN_TIMEOUT = 120.0  # s: a tiny run takes a few seconds, a loaded machine may stretch it


def _elsewhere(urls: list[str], origin: str) -> list[str]:
    """The URLs that do not go to ``origin`` (``scheme://host:port``). ``data:`` URLs fetch
    nothing; a ``blob:`` URL is read where it was made (``blob:<origin>/<uuid>``)."""

    out = []
    for url in urls:
        if url.startswith("data:"):
            continue
        parts = urlsplit(url.removeprefix("blob:"))
        if f"{parts.scheme}://{parts.netloc}" != origin:
            out.append(url)
    return out


def test_elsewhere_keeps_only_other_hosts():
    origin = "http://127.0.0.1:5006"
    urls = [
        "http://127.0.0.1:5006/appa", "http://127.0.0.1:5006/static/js/bokeh.min.js?v=1",
        "blob:http://127.0.0.1:5006/4f1c", "data:image/svg+xml;utf8,<svg/>",
        "https://fonts.googleapis.com/css?family=Open+Sans", "http://localhost:5006/appa",
        "http://127.0.0.1:5007/appa", "https://127.0.0.1:5006/appa", "blob:https://example.org/4f1c",
    ]
    assert _elsewhere(urls, origin) == urls[4:]


@pytest.fixture(scope="module")
def served(truth_store):
    """``(base_url, apps)``: the app on the mock truth (no model), on a free loopback port."""

    from app.main import App

    with serve_sessions(lambda: App(truth=truth_store)) as served:
        yield served


class _Links(html.parser.HTMLParser):
    """``href`` and ``src`` of the ``link`` and ``script`` elements of a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])
        elif tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])


def test_page_links_only_this_server(served):
    url, _ = served
    with urllib.request.urlopen(url, timeout=60) as response:
        page = response.read().decode()
    links = _Links()
    links.feed(page)
    urls = [urljoin(url, u) for u in links.urls]
    assert any("/static/js/bokeh" in u for u in urls), urls  # the parser found the page's scripts
    parts = urlsplit(url)
    elsewhere = _elsewhere(urls, f"{parts.scheme}://{parts.netloc}")
    assert not elsewhere, "the page links resources on other hosts:\n" + "\n".join(elsewhere)


def test_offline_design_is_fast_without_its_web_font():
    from panel.theme import Fast

    from app.server import OfflineFast

    for cdn in (False, True):
        fast, offline = Fast().resolve_resources(cdn=cdn), OfflineFast().resolve_resources(cdn=cdn)
        assert "fonts.googleapis.com" in " ".join(fast["css"].values())  # what the design removes
        assert offline["js_modules"] == fast["js_modules"] and offline["js"] == fast["js"]
        assert offline["css"] == {k: v for k, v in fast["css"].items() if "fonts.googleapis.com" not in v}
    assert not OfflineFast._resources["font"]


def _visit(url: str, app_of, *, run: bool = False) -> tuple[list[str], list[str], list[str]]:
    """Open the page, optionally press *Run* and wait for the results, open each tab; return the
    URLs requested, the failed requests and the console errors (with uncaught page errors)."""

    sync_api = playwright_or_skip()
    requests, failed, errors = [], [], []
    with launch_chromium(sync_api) as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.on("request", lambda request: requests.append(request.url))
        page.on("requestfailed", lambda request: failed.append(f"{request.url} ({request.failure})"))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url, timeout=TIMEOUT_MS)
        page.locator("canvas").first.wait_for(timeout=TIMEOUT_MS)
        app = app_of()
        if run:
            page.get_by_role("button", name="Run", exact=True).click()
            assert wait(page, lambda: app.state.results.available, RUN_TIMEOUT), app.state.run.status_text
            page.get_by_text("Ensemble mean ·").first.wait_for(timeout=20_000)
        for index, tab, text in ((1, "Results", RESULTS_TEXT[run]), (2, "About", "How it works."),
                                 (0, "Observations", "+ Satellite")):
            page.locator(".bk-tab").filter(has_text=tab).first.click()
            reached = wait(page, lambda index=index: app.tabs.active == index, 10.0)
            assert reached, f"the click on {tab} did not reach the server"
            page.get_by_text(text, exact=True).first.wait_for(state="visible", timeout=10_000)
            page.wait_for_timeout(300)  # stylesheets of the views just shown
        page.wait_for_timeout(500)
    assert any("/static/js/bokeh" in u for u in requests), requests  # the listener saw the page load
    return requests, failed, errors


def _check(url: str, requests: list[str], failed: list[str], errors: list[str]) -> None:
    parts = urlsplit(url)
    elsewhere = _elsewhere(requests, f"{parts.scheme}://{parts.netloc}")
    assert not elsewhere, "the page requested other hosts:\n" + "\n".join(elsewhere)
    assert not failed, "failed requests:\n" + "\n".join(failed)
    assert not errors, "console errors:\n" + "\n".join(errors)


@pytest.mark.browser
def test_page_and_its_tabs_request_nothing_elsewhere(served):
    url, apps = served
    _check(url, *_visit(url, lambda: apps[-1]))


@pytest.mark.slow
@pytest.mark.browser
def test_results_of_a_run_request_nothing_elsewhere(tiny_store, tiny_package):
    """The same after a run with the tiny model: the Results tab then holds its plots, tables and
    downloads."""

    from app.main import App

    def make_app():
        app = App(truth=tiny_store, model=tiny_package)
        app.state.editor.load_preset("random", 20, seed=0)
        app.state.run.param.update(members=2, steps=4)
        return app

    with serve_sessions(make_app) as (url, apps):
        _check(url, *_visit(url, lambda: apps[-1], run=True))
