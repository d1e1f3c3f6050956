"""The Results tab in a real browser (Debian's Chromium through Playwright).

One server for the module (in-process, ``pn.serve(..., threaded=True)``) with the tiny trained
model and its truth; the session starts with 20 random stations and runs once through the page's
*Run* button. The tests tap the globe and check that the meteogram is drawn, and press the export
buttons and open the files the browser downloads.
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
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    # Bokeh 3.9 calls DataFrame.reset_index(inplace=True), which pandas 3.1 deprecates.
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]

RUN_TIMEOUT = 120.0
MEMBERS = 3

playwright_or_skip()  # skips this module without Chromium or Playwright

@pytest.fixture(scope="module")
def served(tiny_store, tiny_package):
    """``(base_url, apps)``: the app with the tiny model on a free loopback port."""

    from app.main import App
    from app.plots import warm_results
    from app.server import warm

    warm()
    warm_results()

    def make_app():
        app = App(truth=tiny_store, model=tiny_package)
        app.state.editor.load_preset("random", 20, seed=0)
        app.state.run.param.update(members=MEMBERS, steps=2)
        return app

    with serve_sessions(make_app) as served:
        yield served



def _frames(page) -> list[dict]:
    return page.evaluate(FRAME_JS)


def _globe(page) -> dict:
    """The globe's frame (the largest), scrolled into view."""

    scroll_to_globe(page)
    return max(_frames(page), key=lambda f: f["width"] * f["height"])


def _time_frames(page, times) -> list[dict]:
    """Frames whose x axis spans the run's times (ms since 1970, as Bokeh's datetime axes)."""

    return [f for f in _frames(page) if f["width"] > 0 and f["x"][0] <= times[0] + 1 and f["x"][1] >= times[-1] - 1
            and f["x"][1] - f["x"][0] < 10 * (times[-1] - times[0] + 1)]


@pytest.fixture(scope="module")
def ran(chromium, served):
    """``(page, app)`` after one run pressed in the page."""

    url, apps = served
    page = chromium.new_page(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    page.goto(url, timeout=TIMEOUT_MS)
    page.locator("canvas").first.wait_for(timeout=TIMEOUT_MS)
    assert wait(page, lambda: len(_frames(page)) > 0)
    app = apps[-1]
    run = app.state.run
    page.get_by_role("button", name="Run", exact=True).click()
    assert wait(page, lambda: run.status in ("done", "failed", "cancelled") and not run.busy, RUN_TIMEOUT), \
        run.status_text
    assert run.status == "done", run.notice
    assert wait(page, lambda: app.state.results.available and app.state.view == "results")
    page.get_by_text("Ensemble mean ·").first.wait_for(timeout=20_000)
    yield page, app
    page.close()


def test_tap_on_the_globe_shows_the_meteogram(ran):
    from PIL import Image

    page, app = ran
    results = app.state.results
    page.get_by_text("Click the globe").first.wait_for(timeout=10_000)
    assert results.point is None
    times = results.times.astype("datetime64[ms]").astype(np.float64)
    # The score panels are drawn after the globe is sent: wait for them (a loaded machine is slow).
    assert wait(page, lambda: len(_time_frames(page, times)) == 3), len(_time_frames(page, times))
    frame = _globe(page)
    page.wait_for_timeout(500)
    tap(page, frame["left"] + 0.5 * frame["width"], frame["top"] + 0.5 * frame["height"])
    assert wait(page, lambda: results.point is not None), results.notice
    hint = page.get_by_text("Grid cell nearest to the click")
    hint.first.wait_for(timeout=20_000)
    hint.first.scroll_into_view_if_needed()
    # The meteogram is drawn: one more plot over the run's times, above the scores, with the plume.
    assert wait(page, lambda: len(_time_frames(page, times)) == 4, 20.0), _frames(page)
    page.wait_for_timeout(1000)
    f = min(_time_frames(page, times), key=lambda f: f["top"])
    assert f["height"] > 150 and f["width"] > 250
    clip = {"x": f["left"], "y": f["top"], "width": f["width"], "height": f["height"]}
    image = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), dtype=np.int64)
    blue = (image[..., 2] > image[..., 0] + 40) & (image[..., 2] > 120)  # the Blues plume
    dark = image.sum(axis=-1) < 150  # the truth line
    assert blue.mean() > 0.005, f"no plume in the meteogram ({blue.mean():.2%} blue pixels)"
    assert dark.sum() > 50, "no truth line in the meteogram"


def test_ensemble_export_downloads_the_run(ran, tmp_path):
    from app import adapter

    page, app = ran
    ds = app.state.results.dataset
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Ensemble (zarr, zipped)").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name.endswith(".zarr.zip")
    out = adapter.open_export(path)
    assert out["temperature"].dims == ("member", "time", "level", "latitude", "longitude")
    assert out["2m_temperature"].dims == ("member", "time", "latitude", "longitude")
    assert out.sizes["member"] == MEMBERS
    np.testing.assert_array_equal(out["time"].values, app.state.results.times)
    np.testing.assert_array_equal(out["temperature"].values, ds["temperature"].values)
    assert out.sizes["obs"] == ds.sizes["obs"] > 0


def test_png_export_downloads_the_globe(ran, tmp_path):
    from PIL import Image

    page, app = ran
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Globe view (PNG)").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name.startswith("appa-results-mean-") and path.suffix == ".png"
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] == 900
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels // 8, axis=0)) > 50
