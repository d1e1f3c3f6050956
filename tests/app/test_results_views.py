"""The Results tab and the PNG figure, without a browser, on a real run of the tiny model.

One run per module (the real tiny model through a private job queue); each test checks that a
panel holds the expected HoloViews elements with the data the state returns (or the dataset
itself, read directly), that the PNG decodes with the requested size and shows the field where
it should be, and that the export buttons hand out files that open as the run's output.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import xarray as xr

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

TIMEOUT = 120


@pytest.fixture(scope="module")
def session(tiny_store, tiny_package):
    """``(state, view)``: a session that ran a reanalysis (4 members, stations and a satellite)."""

    import holoviews as hv
    import panel as pn

    from app.jobs import JobQueue
    from app.state import AppState
    from app.views.results import ResultsView

    pn.extension()
    hv.extension("bokeh", logo=False)
    queue = JobQueue(workers=1)
    state = AppState(truth=tiny_store, model=tiny_package, queue=queue)
    editor = state.editor
    assert editor.set_window(hours=12)
    assert editor.load_preset("random", 40, seed=1)
    editor.add_observer("satellite_swath")
    state.run.param.update(members=4, steps=2, seed=0, sampler="ddim")
    view = ResultsView(state)
    assert "No run yet" in view._summary.object and view._downloads["zarr"].disabled
    assert state.run.start(), state.run.notice
    state.run.wait(TIMEOUT)
    assert state.run.status == "done", state.run.notice
    yield state, view
    queue.shutdown(cancel=True)


def _evaluate(obj):
    """The element a (possibly dynamic) HoloViews object shows now."""

    import holoviews as hv

    return obj[()] if isinstance(obj, hv.DynamicMap) else obj


def _elements(obj, kind):
    import holoviews as hv

    obj = _evaluate(obj)
    items = obj.values() if isinstance(obj, (hv.Overlay, hv.Layout)) else [obj]
    out = []
    for item in items:
        item = _evaluate(item)
        if isinstance(item, (hv.Overlay, hv.Layout)):
            out += _elements(item, kind)
        elif isinstance(item, kind):
            out.append(item)
    return out


def _cell(ds, lon, lat):
    i = int(np.argmin(np.abs(ds["latitude"].values - lat)))
    j = int(np.argmin(np.abs((ds["longitude"].values - lon + 180) % 360 - 180)))
    return i, j


def test_summary_says_what_ran(session):
    state, view = session
    text = view._summary.object
    assert "Reanalysis" in text and "**4** members" in text
    n_obs = state.results.dataset.sizes["obs"]
    assert f"**{n_obs:,}** observations from 2 observers" in text
    assert f"{state.results.output.seconds:.1f} s" in text
    assert not any(button.disabled for button in view._downloads.values())


def test_meteogram_appears_at_the_point_with_members_truth_and_observations(session):
    import holoviews as hv

    from app import plots

    state, view = session
    results = state.results
    results.param.update(variable="2m_temperature")
    assert not view._meteogram.visible and "Click the globe" in view._meteogram_hint.object
    # A point next to a station observing the field shown, so that observations are drawn.
    table = results.innovations()
    row = table[table["variable"] == "2m_temperature"].iloc[0]
    assert results.select_point(row["lon"], row["lat"])
    assert view._meteogram.visible
    m = results.meteogram()
    assert len(m.obs) > 0
    overlay = view._meteogram.object
    # The plume: one path per member, equal to the dataset at the grid cell (read directly).
    ds = results.dataset
    i, j = _cell(ds, m.lon, m.lat)
    expected = ds["2m_temperature"].isel(latitude=i, longitude=j).transpose("member", "time").values
    path = plots.plume(m.times, m.members)
    assert len(path.split()) == 4
    for member, piece in zip(expected, path.split()):
        np.testing.assert_allclose(piece.dimension_values("value"), member, rtol=1e-6)
    # What the pane shows: the rasterized plume, the truth, the observations with error bars.
    images = _elements(overlay, hv.Image)
    assert len(images) == 1 and np.nansum(images[0].data[images[0].vdims[0].name].values) > 0
    truth = results.truth["2m_temperature"].isel(latitude=i, longitude=j).values
    curves = [c for c in _elements(overlay, hv.Curve) if c.label == "truth"]
    assert len(curves) == 1
    np.testing.assert_allclose(curves[0].dimension_values(1), truth, rtol=1e-6)
    assert np.isfinite(truth).all()
    bars, = _elements(overlay, hv.ErrorBars)
    scatter, = [s for s in _elements(overlay, hv.Scatter) if s.label == "observations"]
    np.testing.assert_allclose(bars.dimension_values(1), m.obs["value"].to_numpy())
    np.testing.assert_allclose(bars.dimension_values(2), m.obs["error"].to_numpy())
    np.testing.assert_allclose(scatter.dimension_values(1), m.obs["value"].to_numpy())
    # The title names the cell, the variable and the units.
    title = _evaluate(overlay).opts.get("plot").kwargs["title"]
    assert plots.lonlat_label(m.lon, m.lat) in title and "2 metre temperature" in title.lower() and "(K)" in title
    # It follows the variable and level.
    results.param.update(variable="temperature", level=850)
    m850 = results.meteogram()
    assert m850.variable == "temperature" and m850.level == 850
    title = _evaluate(view._meteogram.object).opts.get("plot").kwargs["title"]
    assert "850 hPa" in title and "temperature" in title.lower()


def test_plume_rasterizes_to_the_members_density():
    """Each member crosses the pixel of its value at every interior time (datashader counts)."""

    from holoviews.operation.datashader import rasterize

    from app import plots

    rng = np.random.default_rng(0)
    times = np.datetime64("2020-01-01") + np.arange(9) * np.timedelta64(6, "h")
    members = 10 + rng.normal(size=(5, 9)).cumsum(axis=1)
    path = plots.plume(times, members)
    width, height = 81, 61
    image = rasterize(path, dynamic=False, width=width, height=height, aggregator="count", line_width=0,
                      x_range=(times[0], times[-1]), y_range=(members.min(), members.max()))
    counts = np.nan_to_num(image.data[image.vdims[0].name].values)  # (height, width), row 0 at the bottom
    assert counts.shape == (height, width)
    ys = image.data[image.kdims[1].name].values
    xs = image.data[image.kdims[0].name].values.astype("datetime64[ns]")
    for k in range(1, 8):
        col = int(np.argmin(np.abs(xs - times[k])))
        for value in members[:, k]:
            row = int(np.argmin(np.abs(ys - value)))
            assert counts[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].sum() > 0
    # Five lines over every column: at least five crossings per column, away from the edges.
    assert (counts[:, 2:-2].sum(axis=0) >= 5).all()


def test_metric_curves_equal_the_state_metrics_and_follow_the_time(session):
    import holoviews as hv

    state, view = session
    results = state.results
    results.param.update(variable="temperature", level=500, time_index=0)
    metrics = results.metrics()
    assert metrics is not None and len(metrics) == results.times.size
    panes = view._metrics.objects
    assert view._metrics.visible and len(panes) == 3
    layout = hv.Layout([pane.object for pane in panes])
    curves = {c.label: c for c in _elements(layout, hv.Curve)}
    for label, column in [("RMSE of the mean", "rmse"), ("spread", "spread"), ("CRPS", "crps"),
                          ("spread–skill ratio", "ssr")]:
        np.testing.assert_allclose(curves[label].dimension_values(1), metrics[column].to_numpy())
        np.testing.assert_array_equal(curves[label].dimension_values(0).astype("datetime64[ns]"),
                                      metrics.index.to_numpy())
    ideal, = _elements(layout, hv.HLine)
    assert ideal.data == 1.0 and ideal.opts.get("style").kwargs["line_dash"] == "dashed"
    titles = [pane.object.opts.get("plot").kwargs["title"] for pane in panes]
    assert [t.split(" · ")[0] for t in titles] == ["RMSE and spread", "CRPS", "Spread–skill ratio (ideal 1)"]


def test_time_marker_spans_follow_the_time_without_rerendering(session):
    """The dashed time marker is a Bokeh Span on each rendered time plot, moved in place."""

    from bokeh.document import Document
    from bokeh.models import Span

    state, view = session
    results = state.results
    results.param.update(variable="temperature", level=500, time_index=0)
    results.select_point(10.0, 45.0)
    root = view._layout.get_root(Document())

    def spans():
        return [m for m in root.references() if isinstance(m, Span) and view.time_marker.TAG in m.tags]

    def ms(t):
        return float(np.datetime64(t, "ms").astype(np.int64))

    first = spans()
    assert len(first) == 4  # the meteogram and the three score panels
    assert all(s.location == ms(results.times[0]) for s in first)
    rebuilds = {id(pane.object) for pane in view._metrics.objects}
    results.time_index = 2
    assert spans() == first and all(s.location == ms(results.times[2]) for s in first)
    assert {id(pane.object) for pane in view._metrics.objects} == rebuilds  # nothing was redrawn
    results.point = None


def test_residual_plots_wait_for_the_background_pass(session, monkeypatch):
    """While the run still computes O−B, the published guided ensemble gets a hint, not plots;
    they are drawn once O−B is attached."""

    import dataclasses

    from app.state.run import RunState

    state, view = session
    results = state.results
    final = results.output
    guided = dataclasses.replace(final, dataset=final.dataset.drop_vars("obs_background"))
    results.observer = ""
    with monkeypatch.context() as m:
        m.setattr(RunState, "busy", property(lambda self: True))  # the background pass is on
        results.set_output(guided)
        view._on_field()  # what the session's next tick runs
        assert not view._maps.visible and not view._histogram.visible and view._stats.object == ""
        assert "appear when O−B is computed" in view._diag_hint.object
    assert results.add_background(final, partial=guided)  # the run is done: O−B attached
    view._draw_diagnostics()  # (the run's status change also redraws)
    assert view._maps.visible and len(view._maps.objects) == 2 and view._histogram.visible
    assert "| O−B |" in view._stats.object and "appear when" not in view._diag_hint.object


def test_diagnostics_per_observer_and_field(session):
    import holoviews as hv

    from app import plots

    state, view = session
    results = state.results
    ds = results.dataset
    results.param.update(variable="temperature", level=500)
    results.observer = "satellite"
    assert view._observer.value == "satellite"
    assert view._channel.value == "temperature 500 hPa"  # the field shown on the globe, observed here
    # By hand from the dataset: value minus the member means of the background and the analysis.
    keep = ((ds["observer"].values.astype(str) == "satellite")
            & (ds["obs_variable"].values.astype(str) == "temperature") & (ds["obs_level"].values == 500))
    o_b = ds["obs_value"].values[keep] - ds["obs_background"].values[:, keep].mean(axis=0)
    o_a = ds["obs_value"].values[keep] - ds["obs_analysis"].values[:, keep].mean(axis=0)
    assert keep.sum() > 0
    maps = hv.Layout([pane.object for pane in view._maps.objects])
    points = _elements(maps, hv.Points)
    assert len(points) == 2
    np.testing.assert_allclose(np.sort(points[0].dimension_values("o_minus_b")), np.sort(o_b), rtol=1e-9)
    np.testing.assert_allclose(np.sort(points[1].dimension_values("o_minus_a")), np.sort(o_a), rtol=1e-9)
    # Diverging colours centred on 0, shared by both maps.
    clims = [p.opts.get("style").kwargs.get("clim") or p.opts.get("plot").kwargs.get("clim") for p in points]
    assert clims[0] == clims[1] and clims[0][0] == -clims[0][1] > -np.inf
    assert clims[0][1] == pytest.approx(np.percentile(np.abs(np.concatenate([o_b, o_a])), 99))
    # Coastlines on the flat map.
    assert any(len(p.data) for p in _elements(maps, hv.Path))
    # Histograms over shared bins, counting every residual.
    histograms = _elements(view._histogram.object, hv.Histogram)
    assert [h.label for h in histograms] == ["O−B", "O−A"]
    assert histograms[0].dimension_values(1).sum() == keep.sum() == histograms[1].dimension_values(1).sum()
    np.testing.assert_array_equal(histograms[0].edges, histograms[1].edges)
    # Mean and standard deviation printed.
    text = view._stats.object
    assert f"| O−B | {keep.sum():,} | {o_b.mean():.4g} | {o_b.std(ddof=1):.4g} |" in text
    assert f"| O−A | {keep.sum():,} | {o_a.mean():.4g} | {o_a.std(ddof=1):.4g} |" in text
    # The stations observe surface fields only: the field selector follows the observer.
    view._observer.value = "random-40"
    assert results.observer == "random-40"
    assert set(view._channel.options) == set(plots.innovation_channels(results.innovations()))
    assert "temperature 500 hPa" not in view._channel.options
    results.observer = ""
    assert view._observer.value == ""


def _download(button) -> bytes:
    """Click a FileDownload on the server side and return the bytes it sends to the browser."""

    before = button.data
    button._clicks += 1
    if button.data is None or button.data == before:
        return b""
    return base64.b64decode(button.data.split(",", 1)[1])


def test_export_buttons_hand_out_the_ensemble_and_the_scenario(session, tmp_path):
    from app import adapter

    state, view = session
    ds = state.results.dataset
    data = _download(view._downloads["zarr"])
    name = view._downloads["zarr"].filename
    assert name.endswith(".zarr.zip") and data[:2] == b"PK"
    (tmp_path / name).write_bytes(data)
    out = adapter.open_export(tmp_path / name)
    assert dict(out.sizes) == dict(ds.sizes)
    np.testing.assert_array_equal(out["temperature"].values, ds["temperature"].values)
    np.testing.assert_array_equal(out["obs_value"].values, ds["obs_value"].values)
    assert out.attrs["scenario"] == ds.attrs["scenario"]

    data = _download(view._downloads["netcdf"])
    name = view._downloads["netcdf"].filename
    assert name.endswith(".nc") and data[:4] == b"\x89HDF"
    (tmp_path / name).write_bytes(data)
    out = adapter.open_export(tmp_path / name)
    assert out.sizes["member"] == 4 and out.sizes["time"] == ds.sizes["time"]
    np.testing.assert_array_equal(out["2m_temperature"].values, ds["2m_temperature"].values)

    data = _download(view._downloads["scenario"])
    name = view._downloads["scenario"].filename
    scenario = adapter.scenario_from_bytes(data, name)
    assert [o.name for o in scenario.observations] == ["random-40", "satellite"]
    assert all(o.values is not None for o in scenario.observations)
    assert scenario.members == 4


def test_png_button_renders_the_globe_as_shown(session):
    from PIL import Image

    state, view = session
    state.view = "results"
    state.results.param.update(layer="error", variable="temperature", level=500, time_index=1)
    data = _download(view._downloads["png"])
    name = view._downloads["png"].filename
    assert name == "appa-results-error-temperature500-20200101T0600.png"
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size[0] == 900
    state.view = "truth"
    _download(view._downloads["png"])
    assert view._downloads["png"].filename.startswith("appa-truth-")


def test_downloads_without_a_run_send_nothing_and_say_why(truth_store):
    from app.state import AppState
    from app.views.results import ResultsView

    state = AppState(truth=truth_store)
    view = ResultsView(state)
    assert view._downloads["netcdf"].disabled and not view._downloads["png"].disabled
    assert _download(view._downloads["netcdf"]) == b""
    assert view._downloads["netcdf"].data is None
    assert "no run to export" in state.results.notice.text
    assert _download(view._downloads["png"])[:8] == b"\x89PNG\r\n\x1a\n"  # the truth view can be drawn


# -- the figure ---------------------------------------------------------------------------------------


def _hemispheres(nlat=32, nlon=64) -> xr.DataArray:
    lat = 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    lon = np.arange(nlon) * 360 / nlon
    values = np.where(lat[:, None] > 0, 1.0, 0.0) * np.ones(nlon)
    return xr.DataArray(values, dims=("latitude", "longitude"), coords={"latitude": lat, "longitude": lon})


@pytest.mark.parametrize("projection", ["orthographic", "flat"])
def test_render_png_size_and_orientation(projection):
    """North is up: a field of 1 in the north and 0 in the south puts the yellow end of viridis
    above the purple end, in equal areas (seen from the equator)."""

    from PIL import Image

    from app.figures import render_png

    for width in (900, 613):
        data = render_png(_hemispheres(), projection=projection, central_longitude=30.0, central_latitude=0.0,
                          title="Hemispheres", units="1", cmap="viridis", clim=(0.0, 1.0), width_px=width,
                          coastlines=False, graticule=False)
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int64)
        assert image.shape[1] == width
        assert image.shape[0] < (0.95 if projection == "orthographic" else 0.55) * width
    yellow = (image[..., 0] > 200) & (image[..., 1] > 200) & (image[..., 2] < 100)
    purple = (image[..., 0] > 50) & (image[..., 0] < 90) & (image[..., 1] < 20) & (image[..., 2] > 70)
    rows = np.arange(image.shape[0])[:, None] * np.ones(image.shape[1])
    big = yellow.sum() > 5000 and purple.sum() > 5000
    assert big, (yellow.sum(), purple.sum())
    # The colour bar holds a few pixels of both colours too: compare the map's bulk.
    assert rows[yellow].mean() < rows[purple].mean()
    assert abs(yellow.sum() - purple.sum()) < 0.1 * (yellow.sum() + purple.sum())


def test_render_png_draws_field_coastlines_and_points(session):
    from PIL import Image

    from app.figures import render_png

    state, _ = session
    field = state.results.dataset["temperature"].isel(member=0, time=0).sel(level=500).astype(np.float64)
    clean = render_png(field, projection="orthographic", central_longitude=10, central_latitude=35, title="T",
                       units="K", cmap="coolwarm", clim=(float(field.min()), float(field.max())),
                       coastlines=False, graticule=False)
    full = render_png(field, projection="orthographic", central_longitude=10, central_latitude=35, title="T",
                      units="K", cmap="coolwarm", clim=(float(field.min()), float(field.max())),
                      points=[(np.array([10.0]), np.array([35.0]), "#00ff00"),
                              (np.array([190.0]), np.array([-35.0]), "#00ff00")])
    a = np.asarray(Image.open(io.BytesIO(clean)).convert("RGB"), dtype=np.int64)
    b = np.asarray(Image.open(io.BytesIO(full)).convert("RGB"), dtype=np.int64)
    # Many colours: a shaded field, not a flat fill.
    assert len(np.unique(a.reshape(-1, 3) // 8, axis=0)) > 50
    # Coastlines darken pixels; the visible green point is drawn, the one behind the globe is not.
    assert ((b.sum(axis=-1) < 120) & (a.sum(axis=-1) >= 120)).sum() > 500
    green = (b[..., 1] > 200) & (b[..., 0] < 80) & (b[..., 2] < 80)
    assert 10 < green.sum() < 400
    ys, xs = np.nonzero(green)
    assert abs(xs.mean() - 16 - (900 - 134) / 2) < 8  # at the centre of the disk (layout of render_png)


def test_render_png_refuses_a_field_that_is_not_a_map():
    from app.figures import render_png

    cube = xr.DataArray(np.zeros((2, 4, 8)), dims=("time", "latitude", "longitude"))
    with pytest.raises(ValueError, match="latitude, longitude"):
        render_png(cube, projection="orthographic", central_longitude=0, central_latitude=0, title="", units="",
                   cmap="viridis", clim=(0, 1))
    with pytest.raises(ValueError, match="unknown projection"):
        render_png(_hemispheres(), projection="mercator", central_longitude=0, central_latitude=0, title="",
                   units="", cmap="viridis", clim=(0, 1))
