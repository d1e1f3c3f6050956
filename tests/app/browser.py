"""What the browser tests share: Debian's Chromium through Playwright, and the app served
in-process on a free loopback port (one place for the launch flags, the page geometry script and
the serving loop)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 90_000

# Frame geometry of the plots in the page (with their model ids and map ranges), from Bokeh's views.
FRAME_JS = """() => {
  const out = []; const seen = new Set();
  function walk(v) {
    if (!v || seen.has(v)) return; seen.add(v);
    if (v.frame && v.frame.bbox && v.canvas_view && v.el.isConnected) {
      const r = v.canvas_view.el.getBoundingClientRect();
      out.push({id: v.model.id, left: r.left + v.frame.bbox.left, top: r.top + v.frame.bbox.top,
                width: v.frame.bbox.width, height: v.frame.bbox.height,
                x: [v.frame.x_range.start, v.frame.x_range.end], y: [v.frame.y_range.start, v.frame.y_range.end]});
    }
    for (const c of (v.child_views || [])) walk(c);
  }
  for (const v of Bokeh.index) walk(v);
  return out;
}"""


def playwright_or_skip():
    """Playwright's sync API; skips the calling test module without Chromium or Playwright."""

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (never `playwright install`)",
                    allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="the 'test' extra (playwright) is not installed")


@contextlib.contextmanager
def launch_chromium(sync_api) -> Iterator:
    """A headless Chromium browser."""

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def serve_sessions(make_app: Callable) -> Iterator[tuple[str, list]]:
    """``(base_url, apps)``: one ``make_app()`` per browser session, served on a free loopback
    port; ``apps`` lists each session's :class:`~app.main.App` in the order the sessions opened."""

    import panel as pn

    from app.server import bound_port

    apps = []

    def session():
        app = make_app()
        apps.append(app)
        return app.template()

    server = pn.serve({"appa": session}, port=0, address="127.0.0.1", threaded=True, show=False)
    try:
        port = bound_port(server)
        yield f"http://127.0.0.1:{port}/appa", apps
    finally:
        server.stop()
        _forget_stopped_sessions()


def _forget_stopped_sessions() -> None:
    """Drop served sessions' documents from Bokeh's stack of current documents, once the server
    has stopped.

    Bokeh runs a session's coroutine callbacks under ``patch_curdoc(doc)``, a process-wide stack;
    one still suspended when the server's loop stops never pops its document, and
    ``pn.state.curdoc`` then returns that dead session in every thread: a later test's views
    schedule their drawing on it and never draw (a flaky failure of ``test_results_views.py``,
    seen after the browser tests, once the time player's changes were handled without Panel's
    debounce). A served app stops only with its process, so this is test hygiene. The tests serve
    one app at a time, so every session document left on the stack here is a stopped one.
    """

    import bokeh.io.doc as bokeh_doc

    stack = bokeh_doc._PATCHED_CURDOCS
    stack[:] = [ref for ref in stack if (doc := ref()) is not None and doc.session_context is None]


def wait(page, predicate, timeout: float = 30.0, step_ms: int = 100) -> bool:
    """Poll ``predicate`` in the page's time until it holds or ``timeout`` seconds pass."""

    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        page.wait_for_timeout(step_ms)
    return predicate()


# BokehJS reads a tap that follows the previous one within this many milliseconds as a double tap
# (its `doubletap_threshold`), which neither the point-draw tool nor the tap stream answers.
DOUBLE_TAP_MS = 300


def tap(page, x: float, y: float) -> None:
    """Click the page at viewport pixel ``(x, y)`` as a single tap: first let Bokeh's double-tap
    window of the previous click run out (a quick server can answer a click within it, and the
    next click was then lost as the second half of a double tap)."""

    page.wait_for_timeout(DOUBLE_TAP_MS + 100)
    page.mouse.click(x, y)


def scroll_to_globe(page, attempts: int = 5) -> None:
    """Scroll the first canvas (the globe's) into view; when the plot is being replaced (a new
    result rebuilds it) the element detaches mid-way, so look it up again."""

    for attempt in range(attempts):
        try:
            page.locator("canvas").first.scroll_into_view_if_needed(timeout=10_000)
            return
        except Exception:  # playwright's Error: detached while Bokeh swapped the plot
            if attempt == attempts - 1:
                raise
            page.wait_for_timeout(300)
