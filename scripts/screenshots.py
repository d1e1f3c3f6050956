"""Serve the app and save screenshots of it into ``docs/screenshots/`` (for the README).

    python scripts/screenshots.py                      # the default model and its held-out truth
    python scripts/screenshots.py --model PKG --truth truth.zarr
    python scripts/screenshots.py --only run results   # some of the scenes

Uses Debian's Chromium through Playwright (``/usr/bin/chromium``; never ``playwright install``).
The sessions are prepared through the app's state (a preset network, a satellite, a drawn
track), as a user would with the controls; the run scenes then press *Run* in the page, as a
user would, and photograph:

- ``globe.png``, ``flat.png``, ``profiles.png``: the observation editor (globe, flat map, profiles);
- ``run.png``: a run in progress (progress bar, status);
- ``results.png``: the ensemble mean of the finished run on the globe;
- ``results-tab.png``: the *Results* tab after a click on the globe (meteogram, score curves).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
EDITOR_SCENES = ("globe", "flat", "profiles")
RUN_SCENES = ("run", "results", "results-tab")
# Model id of the largest plot in the page (the globe), to see it replaced.
GLOBE_ID_JS = """() => {
  let best = null, area = 0; const seen = new Set();
  function walk(v) {
    if (!v || seen.has(v)) return; seen.add(v);
    if (v.frame && v.frame.bbox && v.el.isConnected && v.frame.bbox.width * v.frame.bbox.height > area) {
      area = v.frame.bbox.width * v.frame.bbox.height; best = v.model.id;
    }
    for (const c of (v.child_views || [])) walk(c);
  }
  for (const v of Bokeh.index) walk(v);
  return best;
}"""


def _pick(state, name: str, fallback: str | None = None) -> None:
    """Show the truth variable ``name`` when the truth has it."""

    names = state.truth.param.variable.objects
    if name in names:
        state.truth.variable = name
    elif fallback in names:
        state.truth.variable = fallback


def _scene(name: str, truth, model, apps: list):
    """An app page prepared for one screenshot."""

    from app.main import App

    app = App(truth=truth, model=model)
    apps.append(app)
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
        _pick(state, "u_component_of_wind")
        if 500 in state.truth.param.level.objects:
            state.truth.level = 500
    if name == "profiles":
        state.globe.look_at(-100, 40)
        editor.load_preset("random", 60, seed=3, kind="profiles")
        _pick(state, "geopotential")
    if name == "run":  # the app's default run: 8 members, 24 DDIM steps, MMPS
        editor.load_preset("random", 200, seed=0)
        sat = editor.add_observer("satellite_swath", select=False)
        sat.param.update(end_hour=5)
        editor.select(editor.labels[0])
        _pick(state, "2m_temperature")
    return app.template()


def _wait(page, predicate, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        page.wait_for_timeout(200)
    return predicate()


def _run_scenes(page, app, out: Path, wanted: set[str]) -> None:
    """Press Run and photograph the run in progress, the results globe and the Results tab."""

    run = app.state.run
    old = page.evaluate(GLOBE_ID_JS)
    page.get_by_role("button", name="Run", exact=True).click()
    if not _wait(page, lambda: run.status == "running" and run.total > 0 and run.step >= max(2, run.total // 3), 600):
        raise SystemExit(f"the run did not start: {run.status} {run.status_text} {run.notice}")
    if "run" in wanted:
        page.mouse.move(5, 5)
        page.wait_for_timeout(500)
        _save(page, out / "run.png")
    if not _wait(page, lambda: run.status in ("done", "failed", "cancelled") and app.state.view == "results", 900):
        raise SystemExit(f"the run did not finish: {run.status} {run.status_text}")
    if run.status != "done":
        raise SystemExit(f"the run ended {run.status}: {run.notice}")
    _wait(page, lambda: page.evaluate(GLOBE_ID_JS) not in (None, old), 120)
    page.get_by_text("Ensemble mean ·").first.wait_for(timeout=120_000)
    page.wait_for_timeout(3000)
    if "results" in wanted:
        _save(page, out / "results.png")
    if "results-tab" in wanted:
        # A wide window, so that the Results tab has room; a click on the globe (a little north-east
        # of its centre) puts the meteogram there.
        page.set_viewport_size({"width": 1920, "height": 1400})
        page.wait_for_timeout(3000)
        canvas = page.locator("canvas").first.bounding_box()
        page.mouse.click(canvas["x"] + 0.45 * canvas["width"], canvas["y"] + 0.42 * canvas["height"])
        _wait(page, lambda: app.state.results.point is not None, 60)
        if app.tabs.active != 1:  # the app opens the Results tab when a run finishes
            page.locator(".bk-tab").filter(has_text="Results").first.click()
        page.mouse.move(5, 5)
        page.wait_for_timeout(12000)
        _save(page, out / "results-tab.png")


def _save(page, path: Path, *, full_page: bool = False) -> None:
    page.screenshot(path=str(path), full_page=full_page)
    print(f"saved {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' (the shipped model) or a model package")
    parser.add_argument("--truth", type=Path, default=None, help="truth store (default: the model's truth.zarr)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--only", nargs="+", choices=EDITOR_SCENES + RUN_SCENES, default=None,
                        help="make only these screenshots")
    args = parser.parse_args(argv)

    import panel as pn
    from playwright.sync_api import sync_playwright

    from app import adapter
    from app.server import bound_port, warm
    from appa_engine.io.package import resolve_model_path

    model = resolve_model_path(args.model)
    truth = args.truth if args.truth is not None else model / "truth.zarr"
    wanted = set(args.only or EDITOR_SCENES + RUN_SCENES)
    adapter.load_engine(model)  # as `appa serve` does: before the first visitor
    warm()
    apps: list = []
    scenes = [s for s in EDITOR_SCENES if s in wanted] + (["run"] if wanted & set(RUN_SCENES) else [])
    server = pn.serve({name: (lambda name=name: _scene(name, truth, model, apps)) for name in scenes}, port=0,
                      address="127.0.0.1", threaded=True, show=False)
    port = bound_port(server)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            for name in scenes:
                page.goto(f"http://127.0.0.1:{port}/{name}", timeout=120_000)
                page.locator("canvas").first.wait_for(timeout=120_000)
                page.wait_for_timeout(3000)
                if name == "run":
                    _run_scenes(page, apps[-1], args.out, wanted)
                else:
                    _save(page, args.out / f"{name}.png")
            browser.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
