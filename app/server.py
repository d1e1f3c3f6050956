"""Serving the app: one :class:`~app.main.App` per session, loopback by default, warmed at start.

:func:`serve` is what ``appa serve`` calls. Each browser session gets its own app (a function is
passed to :func:`panel.serve`); sessions share the read-only truth on disk, the model (loaded once,
before the first visitor arrives, by :func:`app.adapter.load_engine`) and the job queue in which
their runs wait for the device (:func:`app.jobs.shared_queue`). :func:`warm` runs one datashader
rasterization and one map resampling before the first visitor arrives, so that numba's
compilation (1-3 s) does not stall the first page.

The page loads nothing from another host, so that the app works offline: Bokeh's and Panel's
JavaScript and CSS are served by this server from the installed packages (Bokeh's ``server``
resources, the default; :func:`serve` warns when ``BOKEH_RESOURCES`` says otherwise), and the
page uses :class:`OfflineFast`, Panel's Fast design without its web font, with the system's fonts
(:data:`SYSTEM_FONT`). Icons must be inline SVG: a Panel icon *name* (``Button(icon="...")``) makes
Bokeh fetch the Tabler webfont from ``cdn.jsdelivr.net``. ``tests/app/test_browser_offline.py``
records every request of a page and fails on any other host.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

from panel.io.resources import CDN_DIST
from panel.theme import Fast

log = logging.getLogger(__name__)

__all__ = ["serve", "warm", "app_factory", "OfflineFast", "SYSTEM_FONT"]

#: Font families of the page: whatever sans-serif face the visitor's system has (no web font).
SYSTEM_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, 'Liberation Sans', sans-serif"


class OfflineFast(Fast):
    """Panel's Fast design without its web font.

    :class:`panel.theme.Fast` lists Open Sans from ``fonts.googleapis.com`` among its resources, and
    every page with this design links it (a template's ``font_url`` does not remove it), which an
    offline browser reports as ``net::ERR_NAME_NOT_RESOLVED``. This design drops that entry; its
    other resources are Fast's own, named by their full bundle path (Panel resolves a relative
    path under the design's class name, which is Fast's, not this class's), so they are still
    served from Panel's local bundle. Pair it with a template ``font`` such as :data:`SYSTEM_FONT`.
    """

    _resources = {
        **Fast._resources,
        "font": {},
        "js_modules": {
            name: url if "//" in url else f"{CDN_DIST}bundled/{Fast.__name__.lower()}/{url}"
            for name, url in Fast._resources["js_modules"].items()
        },
    }


def warm() -> None:
    """Compile datashader's kernels and load the coastlines once."""

    import time

    import holoviews as hv
    import numpy as np
    from holoviews.operation.datashader import rasterize

    from app import geo, plots

    t0 = time.perf_counter()
    image = hv.Image(np.random.default_rng(0).random((64, 64)), bounds=(-1, -1, 1, 1))
    rasterize(image, dynamic=False, width=32, height=32)
    projection = geo.make_projection("orthographic", central_longitude=0.0, central_latitude=0.0)
    geo.project_lines(*geo.coastlines(), projection)
    geo.MapSampler(projection, np.linspace(80, -80, 9), np.arange(0, 360, 45.0), bounds=(-1e7, -1e7, 1e7, 1e7),
                   shape=(16, 16))
    plots.warm_results()  # the meteogram's antialiased plume compiles its own kernels
    log.info("warmed datashader and the map geometry in %.1f s", time.perf_counter() - t0)


def bound_port(server, *, timeout: float = 20.0) -> int:
    """The port a server started with ``threaded=True`` (and e.g. ``port=0``) listens on, once it is up.

    Raises:
        TimeoutError: the server did not start within ``timeout`` seconds.
    """

    import panel as pn

    deadline = time.monotonic() + timeout
    while server.server_id not in pn.state._servers:  # Panel's registry of running servers
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not start within {timeout:g} s")
        time.sleep(0.05)
    return pn.state._servers[server.server_id][0].port


def app_factory(*, truth: Any = None, model: Any = None):
    """A function that builds a new app page per session (what :func:`panel.serve` takes)."""

    from app.main import create_app

    return functools.partial(create_app, truth=truth, model=model)


def serve(
    *,
    truth: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    port: int = 5006,
    address: str = "127.0.0.1",
    allow_websocket_origin: list[str] | None = None,
    warm_up: bool = True,
    show: bool = False,
    threaded: bool = False,
    **kwargs,
):
    """Serve the app until interrupted (or, with ``threaded``, return the server thread).

    Arguments:
        truth: Truth dataset (zarr, NetCDF, GRIB) to show.
        model: Model package (or ``"default"``), or None (the app says that no model is loaded);
            loaded here, so that a bad package fails before serving and the first visitor does
            not wait.
        port: TCP port (0: any free port).
        address: Interface to bind; loopback unless told otherwise.
        allow_websocket_origin: Hosts (``host[:port]``) allowed to open the websocket, e.g. the
            public name of a server behind a proxy.
        warm_up: Compile datashader's kernels before accepting sessions.
    """

    import panel as pn
    from bokeh.settings import settings

    from app import adapter

    resources = settings.resources(default="server")
    if resources != "server":
        # Panel takes any other mode as "use its CDN" for its own resources (panel.io.resources.use_cdn)
        log.warning("BOKEH_RESOURCES=%s: pages may load Bokeh's and Panel's resources from a CDN, which "
                    "needs a network connection (unset it to serve them from this server)", resources)
    if truth is not None:
        adapter.open_truth(truth)  # fail now, with the reader's message, not in every session
    if model is not None:
        engine = adapter.load_engine(model)  # once per process: sessions share it
        log.info("%s", engine.status.text)
    if warm_up:
        warm()
    origins = list(allow_websocket_origin or [])
    if origins and port:  # the given hosts replace Bokeh's default: keep this machine allowed too
        origins += [f"localhost:{port}", f"127.0.0.1:{port}", f"{address}:{port}"]
    return pn.serve(
        {"appa": app_factory(truth=truth, model=model)},
        port=port,
        address=address,
        websocket_origin=origins or None,
        show=show,
        threaded=threaded,
        title="Appa Studio",
        websocket_max_message_size=20 * 2**20,
        **kwargs,
    )
