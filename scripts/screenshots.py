"""Serve the app and save screenshots of it into ``docs/screenshots/`` (for the README).

    python scripts/screenshots.py                  # a small mock truth, written to a temp dir
    python scripts/screenshots.py --truth truth.zarr

Uses Debian's Chromium through Playwright (``/usr/bin/chromium``; never ``playwright install``).
The sessions are prepared through the app's state (a preset network, a satellite, a drawn
track), as a user would with the controls, then photographed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _scene(name: str, truth):
    """An app page prepared for one screenshot."""

    from app.main import App

    app = App(truth=truth)
    state = app.state
    editor = state.editor
    if name in ("globe", "flat"):
        editor.load_preset("airports", 150)
        sat = editor.add_observer("satellite_swath", select=False)
        sat.param.update(end_hour=5)
        track = editor.add_observer("track_swath", select=False)
        track.set_track([-60, -30, -10], [-10, 10, 40])
        editor.select(editor.labels[0])
    if name == "flat":
        state.globe.projection = "flat"
        state.truth.variable = "u_component_of_wind" if "u_component_of_wind" in state.truth.param.variable.objects \
            else state.truth.variable
        state.truth.level = 500 if 500 in state.truth.param.level.objects else state.truth.level
    if name == "profiles":
        state.globe.look_at(-100, 40)
        editor.load_preset("random", 60, seed=3, kind="profiles")
        state.truth.variable = "geopotential" if "geopotential" in state.truth.param.variable.objects \
            else state.truth.variable
    return app.template()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", type=Path, default=None, help="truth store (default: a mock one)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    args = parser.parse_args(argv)

    import panel as pn
    from playwright.sync_api import sync_playwright

    from app import adapter
    from app.server import warm

    tmp = tempfile.TemporaryDirectory()
    truth = args.truth or adapter.mock_truth(Path(tmp.name) / "truth.zarr", times=8, nlat=64, nlon=128)
    warm()
    scenes = ("globe", "flat", "profiles")
    server = pn.serve({name: (lambda name=name: _scene(name, truth)) for name in scenes}, port=0,
                      address="127.0.0.1", threaded=True, show=False)
    for _ in range(100):
        if server.server_id in pn.state._servers:
            break
        time.sleep(0.1)
    port = pn.state._servers[server.server_id][0].port
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            for name in scenes:
                page.goto(f"http://127.0.0.1:{port}/{name}", timeout=120_000)
                page.locator("canvas").first.wait_for(timeout=120_000)
                page.wait_for_timeout(3000)
                path = args.out / f"{name}.png"
                page.screenshot(path=str(path))
                print(f"saved {path}")
            browser.close()
    finally:
        server.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
