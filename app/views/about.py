"""The About and Results tabs (Results is filled by the run part of the app)."""

from __future__ import annotations

import panel as pn

from app.state import AppState

__all__ = ["AboutView", "ResultsPlaceholder"]

ABOUT = """
### Appa Studio

Draw weather stations and satellite tracks on the globe, run a **latent diffusion model** guided by
those observations, and explore the ensemble of weather trajectories it proposes against the truth.

**How it works.** An autoencoder compresses each atmospheric state about a thousandfold; a diffusion
model learns the distribution of sequences of these latent states. Observations
*y = A(x) + noise* (stations interpolated at their coordinates, satellite swaths, profiles) guide
the sampler towards trajectories that agree with them (moment-matching posterior sampling), so that
the ensemble spread shows what the observations leave uncertain.

**Using the globe.** Turn it with the centre longitude/latitude sliders (or switch to the flat map);
click to add a station to the network being edited, drag to move, select and press Backspace to
delete. Satellites are set by their orbit; drawn tracks by pressing on the globe.

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


class ResultsPlaceholder(pn.viewable.Viewer):
    """Where the posterior ensemble will be explored; says what is needed to get there."""

    def __init__(self, state: AppState, **params):
        super().__init__(**params)
        self.state = state

    def __panel__(self):
        status = self.state.model
        text = ("### Results\n\nRunning the guided sampler and exploring the ensemble (mean, spread, members, "
                "scores against the truth) comes here.\n\n" + status.text)
        return pn.pane.Markdown(text, sizing_mode="stretch_width", max_width=720)
