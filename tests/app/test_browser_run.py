"""Runs in the served app, in a real browser (Debian's Chromium through Playwright).

One server for the module (in-process, ``pn.serve(..., threaded=True)``) with the tiny trained
model (``tiny_package``) and its truth (``tiny_store``); each session starts with 20 random
stations, so that *Run* assimilates real observations. The tests press the page's buttons and
check both what the page shows (titles, status text, pixels of the globe) and the server-side
state of their session.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from tests.app.browser import FRAME_JS, TIMEOUT_MS, playwright_or_skip, serve_sessions, tap, wait

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

RUN_TIMEOUT = 120.0  # s: a tiny run takes a few seconds, a loaded machine may stretch it

sync_api = playwright_or_skip()

@pytest.fixture(scope="module")
def served(tiny_store, tiny_package):
    """``(base_url, apps)``: the app with the tiny model on a free loopback port; ``apps`` lists
    each session's :class:`App` in the order the sessions opened."""

    from app.main import App
    from app.server import warm

    warm()

    def make_app():
        app = App(truth=tiny_store, model=tiny_package)
        app.state.editor.load_preset("random", 20, seed=0)
        app.state.run.param.update(members=2, steps=4)
        return app

    with serve_sessions(make_app) as served:
        yield served


# Locations of the time markers in the plots shown in the page (Bokeh spans tagged by
# app.views.results.TimeMarker). Only plots with a view in the page count: the browser's document
# may still hold the models of plots an earlier run replaced.
_SPANS_JS = """() => {
  const out = []; const seen = new Set();
  function walk(v) {
    if (!v || seen.has(v)) return; seen.add(v);
    if (v.frame && v.el.isConnected && v.model.center)
      for (const r of v.model.center)
        if (r.type === "Span" && r.tags.includes("appa-time-marker")) out.push(r.location);
    for (const c of (v.child_views || [])) walk(c);
  }
  for (const v of Bokeh.index) walk(v);
  return out;
}"""

# Start and end of every slider and player of the page's Bokeh documents.
RANGES_JS = """() => {
  const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (/Slider|Player/.test(m.type) && typeof m.start === "number" && typeof m.end === "number")
      out.push({type: m.type, title: m.title, start: m.start, end: m.end});
  return out;
}"""


def _open(browser, served):
    """A new page on the app (its console messages are kept in ``page.console_messages``)."""

    url, apps = served
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    page.console_messages = []
    page.on("console", lambda message: page.console_messages.append(f"{message.type}: {message.text}"))
    page.goto(url, timeout=TIMEOUT_MS)
    page.locator("canvas").first.wait_for(timeout=TIMEOUT_MS)
    wait(page, lambda: len(page.evaluate(FRAME_JS)) > 0)
    return page, apps[-1]



def _frame(page) -> dict:
    """The globe's frame in viewport pixels (scrolled into view) and its map ranges."""

    for _ in range(20):
        try:
            page.locator("canvas").first.scroll_into_view_if_needed(timeout=5_000)
            frames = page.evaluate(FRAME_JS)
            if frames:
                return max(frames, key=lambda f: f["width"] * f["height"])
        except sync_api.Error:  # the plot was being replaced: its canvas left the page
            pass
        page.wait_for_timeout(250)
    raise AssertionError("no plot in the page")


def _wait_new_plot(page, old_id: str, timeout=30.0) -> bool:
    """Wait until the globe's plot in the page is another one than ``old_id`` (it was rebuilt),
    then for it to be drawn."""

    ok = wait(page, lambda: _frame(page)["id"] != old_id, timeout)
    page.wait_for_timeout(500)
    return ok


def _globe_pixels(page) -> np.ndarray:
    """The globe's frame as an RGB array (a screenshot of the page clipped to it)."""

    from PIL import Image

    f = _frame(page)
    clip = {"x": f["left"], "y": f["top"], "width": f["width"], "height": f["height"]}
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), dtype=np.int64)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose colour differs noticeably."""

    return float((np.abs(a - b).sum(axis=-1) > 30).mean())


# Types of the tools of the plots shown in the page (the globe's tell which view it draws).
TOOLS_JS = """() => {
  const out = []; const seen = new Set();
  function walk(v) {
    if (!v || seen.has(v)) return; seen.add(v);
    if (v.frame && v.model.toolbar && v.el.isConnected) for (const t of v.model.toolbar.tools) out.push(t.type);
    for (const c of (v.child_views || [])) walk(c);
  }
  for (const v of Bokeh.index) walk(v);
  return out;
}"""


def _has_tool(page, kind: str) -> bool:
    """Whether a plot shown in the page has a tool of type ``kind`` (e.g. ``PointDrawTool``)."""

    return kind in page.evaluate(TOOLS_JS)


def _title(page) -> str:
    return page.locator("h4").filter(has_text=re.compile(r"UTC")).first.inner_text()


def _button(page, name: str):
    return page.get_by_role("button", name=name, exact=True)


def _settle(page, predicate, timeout=10.0) -> bool:
    """Wait for ``predicate`` then for the page to redraw."""

    ok = wait(page, predicate, timeout)
    page.wait_for_timeout(600)
    return ok


def _run_and_wait(page, app, timeout=RUN_TIMEOUT) -> None:
    run = app.state.run
    revision, job = app.state.results.revision, run.job
    _button(page, "Run").click()
    assert wait(page, lambda: run.job is not job, 20.0), "the click did not start a run"
    assert wait(page, lambda: run.job.is_finished and not run.busy and run.status == run.job.status, timeout), \
        f"the run did not finish: {run.status} {run.status_text}"
    assert run.status == "done", run.notice
    assert wait(page, lambda: app.state.results.revision > revision)


@pytest.fixture(scope="module")
def page_a(chromium, served):
    return _open(chromium, served)


def test_run_shows_the_ensemble_on_the_globe(page_a):
    page, app = page_a
    state = app.state
    assert state.run.available and not state.results.available
    assert _button(page, "Cancel").is_disabled()
    page.get_by_text("Results appear here once a run has finished.").wait_for(timeout=10_000)
    truth_title = _title(page)
    before = _globe_pixels(page)
    # Before any run, the results' time player has a single time: no slider or player of the page
    # may have start == end (Bokeh's validation error E-1021, EQUAL_SLIDER_START_END).
    ranges = page.evaluate(RANGES_JS)
    players = [r for r in ranges if r["type"].endswith("Player")]
    assert len(players) == 2 and all(r["start"] < r["end"] for r in ranges), ranges  # truth and results
    assert not [m for m in page.console_messages if "E-1021" in m or "EQUAL_SLIDER_START_END" in m]

    _run_and_wait(page, app)
    # The state switched the globe to the results; the page shows the ensemble mean.
    assert state.view == "results"
    page.get_by_text("Ensemble mean ·").first.wait_for(timeout=20_000)
    assert _settle(page, lambda: "Ensemble mean" in _title(page))
    assert _title(page) != truth_title
    page.get_by_text(re.compile(r"Done in \d+\.\d s")).first.wait_for(timeout=10_000)
    after = _globe_pixels(page)
    assert _changed(before, after) > 0.05, "the globe looks the same after the run"
    assert not _button(page, "Run").is_disabled() and _button(page, "Cancel").is_disabled()
    # The Results tab opened.
    assert app.tabs.active == 1


def test_polling_a_run_does_not_mark_the_server_busy(page_a):
    """The progress poll (every POLL_MS) must not flash the template's busy spinner: Panel marks
    the server busy during periodic callbacks unless they run in the background, and a spinning
    spinner cost a same-machine Chromium a fifth of a core for the whole run."""

    import panel as pn

    page, app = page_a
    run = app.state.run
    steps = run.steps
    seen: list[int] = []  # the steps the session's state showed, sampled during the run
    flips: list[bool] = []
    watcher = pn.state.param.watch(lambda event: flips.append(event.new), "busy")
    try:
        run.steps = 24  # a few polls' worth of steps
        job = run.job
        _button(page, "Run").click()
        assert wait(page, lambda: run.job is not job and run.status == "running", 20.0)
        del flips[:]  # the click itself is a browser event: the server was busy handling it
        while not run.job.is_finished:
            seen.append(run.step)
            page.wait_for_timeout(50)
        assert wait(page, lambda: not run.busy and run.status == run.job.status, RUN_TIMEOUT)
    finally:
        pn.state.param.unwatch(watcher)
        run.steps = steps
    assert run.status == "done", run.notice
    assert len(set(seen)) >= 3, f"too few polls to tell: steps seen {sorted(set(seen))}"
    assert True not in flips, "a poll marked the server busy"


def test_player_advances_frames_without_rebuilding_the_plot(page_a):
    page, app = page_a
    results, globe = app.state.results, app.globe
    if not results.available:
        _run_and_wait(page, app)
    assert results.times.size > 2
    rebuilds = globe.rebuilds
    pane_object = globe._pane.object
    title = _title(page)
    before = _globe_pixels(page)
    index = results.time_index
    page.locator("button.next").locator("visible=true").first.click()
    assert wait(page, lambda: results.time_index == index + 1), "the player's step did not reach the server"
    assert _settle(page, lambda: _title(page) != title), "the title's time did not change"
    assert results.time_label in _title(page)
    after = _globe_pixels(page)
    assert _changed(before, after) > 0.01, "the image did not change with the time"
    # In place: the same plot, updated through its stream.
    assert globe.rebuilds == rebuilds and globe._pane.object is pane_object
    # The score plots' time markers (Bokeh spans) moved to the new time in the page.
    expected = float(np.datetime64(results.times[results.time_index], "ms").astype(np.int64))
    assert _settle(page, lambda: (spans := page.evaluate(_SPANS_JS)) and all(x == expected for x in spans)), \
        page.evaluate(_SPANS_JS)

    # Another layer rebuilds the plot with its own colour map: the error (mean − truth).
    plot_id = _frame(page)["id"]
    page.get_by_role("button", name="Error", exact=True).click()
    assert wait(page, lambda: results.layer == "error")
    assert _wait_new_plot(page, plot_id)
    assert "Error (mean − truth)" in _title(page)
    assert globe.rebuilds > rebuilds


def test_tap_on_the_globe_picks_the_meteogram_point(page_a):
    from app import geo

    page, app = page_a
    results = app.state.results
    if not results.available:
        _run_and_wait(page, app)
    assert not _has_tool(page, "PointDrawTool")  # no drawing on the results
    frame = _frame(page)
    px, py = frame["left"] + 0.55 * frame["width"], frame["top"] + 0.45 * frame["height"]
    tap(page, px, py)
    assert wait(page, lambda: results.point is not None), results.notice
    x0, x1 = frame["x"]
    y0, y1 = frame["y"]
    x = x0 + (px - frame["left"]) / frame["width"] * (x1 - x0)
    y = y1 - (py - frame["top"]) / frame["height"] * (y1 - y0)
    g = app.state.globe
    projection = geo.make_projection(g.projection, central_longitude=g.central_longitude,
                                     central_latitude=g.central_latitude)
    lon, lat, ok = geo.unproject([x], [y], projection)
    assert ok[0]
    grid = results.dataset
    dlat = abs(float(grid["latitude"][0] - grid["latitude"][1]))
    dlon = abs(float(grid["longitude"][1] - grid["longitude"][0]))
    p_lon, p_lat = results.point
    assert abs(((p_lon - lon[0] + 180) % 360) - 180) <= dlon / 2 + 1e-6 and abs(p_lat - lat[0]) <= dlat / 2 + 1e-6
    # Off the globe (a corner of the frame): refused, with a message on the page.
    tap(page, frame["left"] + 4, frame["top"] + 4)
    assert wait(page, lambda: results.notice is not None and "off the globe" in results.notice.text)
    page.get_by_text("That point is off the globe").first.wait_for(timeout=10_000)
    assert results.point == (p_lon, p_lat)

    # Back to the truth: the drawing tools return (a click adds a station again).
    plot_id = frame["id"]
    page.get_by_role("button", name="Truth (draw)", exact=True).click()
    assert wait(page, lambda: app.state.view == "truth")
    assert _wait_new_plot(page, plot_id)
    assert _has_tool(page, "PointDrawTool"), "the drawing tool did not come back"
    draft = app.state.editor.active_draft
    n = draft.n_stations
    frame = _frame(page)
    tap(page, frame["left"] + 0.5 * frame["width"], frame["top"] + 0.5 * frame["height"])
    assert wait(page, lambda: draft.n_stations == n + 1), app.state.editor.draw_notice


def test_cancel_stops_a_run_and_the_app_keeps_working(page_a):
    page, app = page_a
    run = app.state.run
    steps = page.get_by_label("Diffusion steps")
    steps.fill("400")
    steps.press("Enter")
    assert wait(page, lambda: run.steps == 400)
    _button(page, "Run").click()
    assert wait(page, lambda: run.status == "running" and run.step >= 1, RUN_TIMEOUT), run.status_text
    page.locator("progress").first.wait_for(timeout=10_000)
    assert _button(page, "Run").is_disabled()
    _button(page, "Cancel").click()
    assert wait(page, lambda: run.status == "cancelled"), run.status_text
    page.get_by_text(re.compile(r"Cancelled after \d+ of \d+ steps")).first.wait_for(timeout=10_000)
    assert run.total >= 400 and run.step < run.total
    # Still working: a short run completes.
    steps.fill("4")
    steps.press("Enter")
    assert wait(page, lambda: run.steps == 4)
    _run_and_wait(page, app)


@pytest.mark.slow
def test_two_sessions_queue_and_keep_their_own_results(chromium, served):
    page_1, app_1 = _open(chromium, served)
    page_2, app_2 = _open(chromium, served)
    assert app_1 is not app_2
    run_1, run_2 = app_1.state.run, app_2.state.run
    # Session 1 takes the device for a while; session 2 (another seed) queues behind it.
    for page, seed in ((page_1, "1"), (page_2, "2")):
        seed_input = page.get_by_label("Random seed")
        page.get_by_text("Sampler and guidance").click()
        seed_input.fill(seed)
        seed_input.press("Enter")
    assert wait(page_1, lambda: run_1.seed == 1 and run_2.seed == 2)
    steps = page_1.get_by_label("Diffusion steps")
    steps.fill("60")
    steps.press("Enter")
    assert wait(page_1, lambda: run_1.steps == 60)
    _button(page_1, "Run").click()
    assert wait(page_1, lambda: run_1.status == "running", RUN_TIMEOUT)
    _button(page_2, "Run").click()
    page_2.get_by_text("Queued: 1 run ahead").first.wait_for(timeout=20_000)
    assert run_2.status == "queued" and run_2.queue_position == 1
    assert wait(page_2, lambda: run_1.status == "done" and run_2.status == "done", 2 * RUN_TIMEOUT), \
        (run_1.status_text, run_2.status_text)
    assert wait(page_2, lambda: app_1.state.results.available and app_2.state.results.available)
    # Each session has its own result: its own seed, its own ensemble.
    out_1, out_2 = app_1.state.results.output, app_2.state.results.output
    assert out_1 is not out_2
    assert out_1.scenario.seed == 1 and out_2.scenario.seed == 2
    assert out_1.scenario.sampler.steps == 60 and out_2.scenario.sampler.steps == 4
    field_1, field_2 = app_1.state.results.field(), app_2.state.results.field()
    assert not np.allclose(field_1.values, field_2.values)
    for page in (page_1, page_2):
        page.get_by_text("Ensemble mean ·").first.wait_for(timeout=20_000)
    page_1.close()
    page_2.close()
