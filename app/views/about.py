"""The About tab: what the app does and how to use it."""

from __future__ import annotations

import panel as pn

__all__ = ["AboutView"]

ABOUT = """
### Appa Studio

Draw weather stations and satellite tracks on the globe, run a **latent diffusion model** guided by
those observations, and explore the ensemble of weather trajectories it proposes against the truth.

**How it works.** An autoencoder compresses each atmospheric state about a thousandfold; a diffusion
model learns the distribution of sequences of these latent states. Observations
*y = A(x) + noise* (stations interpolated at their coordinates, satellite swaths, profiles) guide
the sampler towards trajectories that agree with them (moment-matching posterior sampling), so that
the ensemble spread shows what the observations leave uncertain.

**Using the app.**
1. *Draw.* In the **Observations** tab add stations (click on the globe; drag to move; select and
   press Backspace to delete), a preset network or a station file, satellites (set by their orbit)
   and hand-drawn tracks (press on the globe). Their values are simulated from the truth, with noise.
2. *Run.* Pick the task (reanalysis of the window, filtering, or a forecast), the number of members
   and diffusion steps, and press **Run**. The job queues for the model (one at a time: your place
   in the queue is shown), a progress bar follows the diffusion steps, and **Cancel** stops it.
3. *Explore.* When the run is done the globe shows the **results**: the ensemble mean, its spread,
   any member, the truth or the error (mean − truth), with a time player. Click on the globe for a
   meteogram of that point; the **Results** tab also has score curves (RMSE, spread, CRPS,
   spread–skill), the observation-space diagnostics (O−B, O−A) and exports (ensemble as zarr or
   NetCDF, the scenario file that re-runs it with `appa assimilate --scenario`, a PNG of the globe).
   Switch the sidebar back to **Truth (draw)** to edit the observers and run again.

Turn the globe with the centre longitude/latitude sliders, or switch to the flat map.

**References.**
Andry, Lewin, Rozet, Rochman, Mangeleer, Pirlet, Faulx, Grégoire, Louppe (2025), *Appa: Bending
Weather Dynamics with Latent Diffusion Models for Global Data Assimilation*, arXiv:2504.18720.
Rozet, Andry, Lanusse, Louppe (2024), *Learning Diffusion Priors from Observations by Expectation
Maximization* (MMPS), arXiv:2405.13712.

**Data.** Coastlines: Natural Earth 1:110m (public domain). Airports: the `airportsdata` package (MIT).
Appa Studio is MIT-licensed.
"""


class AboutView(pn.viewable.Viewer):
    def __panel__(self):
        return pn.pane.Markdown(ABOUT, sizing_mode="stretch_width", max_width=720)
