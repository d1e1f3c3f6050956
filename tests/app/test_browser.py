"""The served app in a real browser (Debian's Chromium through Playwright).

One server for the module (in-process, ``pn.serve(..., threaded=True)``); each test drives a page
and checks the server-side state of its session as well as what the page shows.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.app.browser import (
    FRAME_JS, TIMEOUT_MS, playwright_or_skip, scroll_to_globe, serve_sessions, tap, wait,
)

pytestmark = [
    pytest.mark.browser,
    # Panel 1.9 announces renames for 2.0 (name -> label, button_type -> color); the app keeps the
    # names that work across the supported Panel versions.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


playwright_or_skip()  # skips this module without Chromium or Playwright

@pytest.fixture(scope="module")
def served(truth_store):
    """``(base_url, apps)``: the app served on a free loopback port; ``apps`` lists each
    session's :class:`App` in the order the sessions opened."""

    from app.main import App
    from app.server import warm

    warm()

    def make_app():
        app = App(truth=truth_store)
        app.state.editor.add_observer("stations")
        return app

    with serve_sessions(make_app) as served:
        yield served


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    page.goto(url, timeout=TIMEOUT_MS)
    page.locator("canvas").first.wait_for(timeout=TIMEOUT_MS)
    wait(page, lambda: len(page.evaluate(FRAME_JS)) > 0)
    return page



def _frame(page) -> dict:
    """The globe's frame in viewport pixels (scrolled into view) and its map ranges."""

    scroll_to_globe(page)
    frames = page.evaluate(FRAME_JS)
    return max(frames, key=lambda f: f["width"] * f["height"])


def _to_map(frame, px, py):
    x0, x1 = frame["x"]
    y0, y1 = frame["y"]
    x = x0 + (px - frame["left"]) / frame["width"] * (x1 - x0)
    y = y1 - (py - frame["top"]) / frame["height"] * (y1 - y0)
    return x, y


@pytest.fixture(scope="module")
def page_a(chromium, served):
    url, apps = served
    page = _open(chromium, url)
    return page, apps[-1]


def test_globe_renders(page_a):
    from PIL import Image

    page, _ = page_a
    frame = _frame(page)
    clip = {"x": frame["left"], "y": frame["top"], "width": frame["width"], "height": frame["height"]}
    image = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), dtype=np.int64)
    coloured = np.abs(image - 255).sum(axis=-1) > 60  # not white
    assert coloured.mean() > 0.5, f"only {coloured.mean():.0%} of the globe's frame is drawn"
    # Several distinct colours: the field is shaded, not a flat fill.
    assert len(np.unique(image[coloured].reshape(-1, 3) // 16, axis=0)) > 20


def test_click_adds_station_at_the_clicked_point(page_a):
    from app import geo

    page, app = page_a
    editor = app.state.editor
    draft = editor.active_draft
    assert draft.n_stations == 0
    frame = _frame(page)
    px, py = frame["left"] + 0.62 * frame["width"], frame["top"] + 0.40 * frame["height"]
    tap(page, px, py)
    assert wait(page, lambda: draft.n_stations == 1), "the click did not reach the server"
    g = app.state.globe
    projection = geo.make_projection(g.projection, central_longitude=g.central_longitude,
                                     central_latitude=g.central_latitude)
    lon, lat, ok = geo.unproject(*_to_map(frame, px, py), projection)
    assert ok[0]
    row = draft.table.iloc[0]
    assert abs(((row["lon"] - lon[0] + 180) % 360) - 180) < 1.0 and abs(row["lat"] - lat[0]) < 1.0
    # The station table in the page shows it (longitudes shown in [-180, 180)).
    cells = page.locator(".tabulator-cell[tabulator-field='lat']")
    assert wait(page, lambda: cells.count() == 1)
    assert abs(float(cells.first.inner_text()) - lat[0]) < 1.0
    lon_shown = float(page.locator(".tabulator-cell[tabulator-field='lon']").first.inner_text())
    assert abs(((lon_shown - lon[0] + 180) % 360) - 180) < 1.0

    # A click in a corner of the frame, off the globe's disk: refused and said so.
    tap(page, frame["left"] + 4, frame["top"] + 4)
    assert wait(page, lambda: editor.draw_notice is not None)
    assert "off the globe" in editor.draw_notice.text
    assert draft.n_stations == 1
    page.get_by_text("off the globe").first.wait_for(timeout=10_000)


def test_invalid_upload_shows_an_error_and_the_app_keeps_working(page_a, tmp_path):
    page, app = page_a
    editor = app.state.editor
    before = list(editor.labels)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,longitude,height\nA,4.35,10\n")
    page.locator("input[type='file'][accept='.csv,.geojson,.json']").set_input_files(str(bad))
    assert wait(page, lambda: editor.upload_notice is not None)
    assert editor.upload_notice.is_error and "lat" in editor.upload_notice.text
    page.get_by_text("has no lat column").first.wait_for(timeout=10_000)
    assert editor.labels == before
    # Still working: a click adds a station, a button adds a satellite.
    frame = _frame(page)
    draft = editor.active_draft
    n = draft.n_stations
    tap(page, frame["left"] + 0.45 * frame["width"], frame["top"] + 0.55 * frame["height"])
    assert wait(page, lambda: draft.n_stations == n + 1), editor.draw_notice
    page.get_by_role("button", name="+ Satellite").click()
    assert wait(page, lambda: editor.active == "satellite")
    editor_draft = editor.active_draft
    assert editor_draft.kind == "satellite_swath" and editor.n_observations() > 0


def test_two_sessions_do_not_share_stations(page_a, chromium, served):
    url, apps = served
    page, app_a = page_a
    n_a = app_a.state.editor.draft("stations").n_stations
    page_b = _open(chromium, url)
    app_b = apps[-1]
    assert app_b is not app_a
    draft_b = app_b.state.editor.active_draft
    assert draft_b.n_stations == 0
    frame = _frame(page_b)
    tap(page_b, frame["left"] + 0.5 * frame["width"], frame["top"] + 0.5 * frame["height"])
    assert wait(page_b, lambda: draft_b.n_stations == 1)
    page.wait_for_timeout(500)
    assert app_a.state.editor.draft("stations").n_stations == n_a
    assert app_b.state.editor.labels == ["stations"]  # B sees none of A's observers
    page_b.close()
