"""Latency of the app as a visitor feels it: page load, click to first result, frame switch.

The app is served in-process (as ``appa serve`` does: model loaded and datashader warmed before
the first visitor) and driven by Debian's Chromium through Playwright. Printed:

1. **page load**: from ``page.goto`` until the globe's canvas is drawn (the plot's frame is laid
   out), for the first session and the median of the next ``--repeats``;
2. **click to first result**: a session with ``--stations`` random stations (the editor's
   "random" preset) and the app's default run settings (8 members, 24 DDIM steps, MMPS with one
   solver iteration); from the click on *Run* until the page shows the ensemble mean on the
   globe (the title says so and the new plot is in the page), split into the guided pass (the
   job publishes its guided ensemble before the background pass that gives O−B) and the rest
   (queueing, handing the output to the views, building and sending the plots); then until the
   whole run (O−B included) is done;
3. **frame switch**: the results' time player is stepped from the page (its Bokeh model's
   value is set, exactly what its *next* button does) and the time until the globe's image has
   new data in the browser and two more animation frames have been painted, median of
   ``--frames`` steps (no plot is rebuilt: the frame is written into the rendered image,
   :class:`app.views.globe.FrameFeed`).

Targets (issue #5): first result under 20 s on 2 CPU cores, frame switch under 200 ms. Not a
test::

    python bench/app_latency.py                          # default model and its truth, this CPU
    python bench/app_latency.py --stations 1000 --frames 15
    python bench/app_latency.py --quick --model PKG --truth STORE   # small sizes (smoke test)
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_lines, positive, table  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TARGET_FIRST_RESULT_S = 20.0
TARGET_FRAME_MS = 200.0

# Frame geometry and model id of the plots in the page (the globe is the largest).
FRAMES_JS = """() => {
  const out = []; const seen = new Set();
  function walk(v) {
    if (!v || seen.has(v)) return; seen.add(v);
    if (v.frame && v.frame.bbox && v.canvas_view && v.el.isConnected && v.frame.bbox.width > 0)
      out.push({id: v.model.id, area: v.frame.bbox.width * v.frame.bbox.height});
    for (const c of (v.child_views || [])) walk(c);
  }
  for (const v of Bokeh.index) walk(v);
  return out;
}"""

# Step the visible time player and resolve with the ms until an image glyph of a plot in the page
# has new data and two animation frames have passed (the new image is painted).
FRAME_SWITCH_JS = """async () => {
  const views = []; const seen = new Set();
  function walk(v) {
    if (!v || seen.has(v)) return; seen.add(v);
    views.push(v);
    for (const c of (v.child_views || [])) walk(c);
  }
  for (const v of Bokeh.index) walk(v);
  const player = views.find(v => v.model.type.endsWith("Player") && v.el.isConnected && v.el.offsetParent !== null);
  if (!player) return -1;
  const sources = [];
  for (const d of Bokeh.documents)
    for (const m of d.all_models)
      if (m.type === "GlyphRenderer" && m.glyph.type === "Image") sources.push(m.data_source);
  const before = sources.map(s => s.data.image ? s.data.image[0] : null);
  const m = player.model;
  const t0 = performance.now();
  m.value = m.value >= m.end ? m.start : m.value + 1;
  const frame = () => new Promise(r => requestAnimationFrame(r));
  while (performance.now() - t0 < 20000) {
    await frame();
    if (sources.some((s, i) => (s.data.image ? s.data.image[0] : null) !== before[i])) {
      await frame(); await frame();
      return performance.now() - t0;
    }
  }
  return -2;
}"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="default", help="'default' (the shipped model) or a model package")
    p.add_argument("--truth", type=Path, default=None,
                   help="truth store (default: the model package's truth.zarr)")
    p.add_argument("--stations", type=positive, default=200, help="random stations of the run")
    p.add_argument("--members", type=positive, default=8, help="ensemble size")
    p.add_argument("--steps", type=positive, default=24, help="diffusion steps (DDIM)")
    p.add_argument("--repeats", type=positive, default=3, help="page loads timed after the first")
    p.add_argument("--frames", type=positive, default=9, help="player steps timed")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the run")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (2 members, 4 steps, 20 stations, 1 page load, 3 frames): a smoke test; "
                   "the figures mean little")
    args = p.parse_args(argv)
    if args.quick:
        args.stations, args.members, args.steps, args.repeats, args.frames = 20, 2, 4, 1, 3
    if not os.path.exists(CHROMIUM):
        p.error(f"{CHROMIUM} is missing: apt-get install chromium (never `playwright install`)")
    return args


def _wait(page, predicate, timeout: float, step_ms: int = 50) -> bool:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate():
            return True
        page.wait_for_timeout(step_ms)
    return predicate()


def _globe_id(page) -> str | None:
    frames = page.evaluate(FRAMES_JS)
    return max(frames, key=lambda f: f["area"])["id"] if frames else None


def _load(browser, url: str) -> tuple[object, float]:
    """A new page and the seconds until its globe is drawn."""

    page = browser.new_page(viewport={"width": 1500, "height": 950})
    t0 = time.perf_counter()
    page.goto(url, timeout=300_000)
    page.locator("canvas").first.wait_for(timeout=300_000)
    if not _wait(page, lambda: _globe_id(page) is not None, 300.0):
        raise SystemExit("the globe was never drawn")
    return page, time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    # Pages closed with messages in flight make Bokeh and asyncio complain at exit: harmless here.
    for name, level in (("bokeh", logging.ERROR), ("asyncio", logging.CRITICAL)):
        logging.getLogger(name).setLevel(level)

    import panel as pn
    import torch
    from playwright.sync_api import sync_playwright

    from app import adapter
    from app.main import App
    from app.server import bound_port, warm
    from appa_engine.io.package import resolve_model_path

    model = resolve_model_path(args.model)
    truth = args.truth if args.truth is not None else model / "truth.zarr"
    if not Path(truth).exists():
        raise SystemExit(f"no truth at {truth}: pass --truth")
    print("\n".join(machine_lines(torch.device("cpu"))))
    t0 = time.perf_counter()
    engine = adapter.load_engine(model)
    warm()
    print(f"{engine.status.text}\nserver start (model load + warm-up): {time.perf_counter() - t0:.1f} s")

    apps: list = []

    def session(stations: int):
        app = App(truth=truth, model=model)
        if stations:
            app.state.editor.load_preset("random", stations, seed=0)
        app.state.run.param.update(members=args.members, steps=args.steps, sampler="ddim", guidance="mmps",
                                   iterations=1, seed=0)
        apps.append(app)
        return app.template()

    server = pn.serve({"load": lambda: session(0), "run": lambda: session(args.stations)}, port=0,
                      address="127.0.0.1", threaded=True, show=False)
    base = f"http://127.0.0.1:{bound_port(server)}"
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # 1. Page loads.
            page, first = _load(browser, f"{base}/load")
            page.close()
            loads = []
            for _ in range(args.repeats):
                page, seconds = _load(browser, f"{base}/load")
                loads.append(seconds)
                page.close()
            rows.append(("page load, first session", first, "s", "", ""))
            rows.append((f"page load, median of {len(loads)}", statistics.median(loads), "s", "", ""))

            # 2. Click to first result.
            page, _ = _load(browser, f"{base}/run")
            app = apps[-1]
            n_obs = app.state.editor.n_observations()
            old = _globe_id(page)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Run", exact=True).click()
            run = app.state.run
            shown = _wait(page, lambda: run.status in ("failed", "cancelled")
                          or (app.state.view == "results" and _globe_id(page) not in (None, old)
                              and page.get_by_text("Ensemble mean ·").count() > 0), args.timeout)
            first_result = time.perf_counter() - t0
            if not shown or run.status in ("failed", "cancelled"):
                raise SystemExit(f"the run did not finish: {run.status} {run.status_text} {run.notice}")
            # The guided ensemble is shown first; the background pass (O−B) goes on after it.
            job = run.job
            _wait(page, lambda: job.is_finished, args.timeout)
            complete = time.perf_counter() - t0
            if job.status != "done":
                raise SystemExit(f"the run did not finish: {job.status} {run.status_text} {run.notice}")
            guided = (job.published_at or job.finished) - job.started
            rows.append((f"click to first result ({args.members} members, {args.steps} steps, "
                         f"{args.stations} stations = {n_obs:,} obs)", first_result, "s",
                         f"< {TARGET_FIRST_RESULT_S:.0f} s", "yes" if first_result < TARGET_FIRST_RESULT_S else "NO"))
            rows.append(("  of which the guided pass on the worker", guided, "s", "", ""))
            rows.append(("  of which queue, views and page", first_result - guided, "s", "", ""))
            rows.append(("click to O−B (the background pass done)", complete, "s", "", ""))

            # 3. Frame switches (the player of the results).
            page.wait_for_timeout(1000)
            rebuilds = app.globe.rebuilds
            times = []
            for _ in range(args.frames):
                ms = page.evaluate(FRAME_SWITCH_JS)
                if ms < 0:
                    raise SystemExit("no new frame reached the page" if ms == -2 else "no time player in the page")
                times.append(ms)
                page.wait_for_timeout(300)
            median = statistics.median(times)
            rows.append((f"frame switch, median of {len(times)} (max {max(times):.0f})", median, "ms",
                         f"< {TARGET_FRAME_MS:.0f} ms", "yes" if median < TARGET_FRAME_MS else "NO"))
            if app.globe.rebuilds != rebuilds:
                print("warning: the globe was rebuilt while the player stepped")
            browser.close()
    finally:
        server.stop()
    print(table(["measure", "value", "unit", "target", "met"], rows, title="App latency"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
