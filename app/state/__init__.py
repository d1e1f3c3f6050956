"""The app's state: :class:`param.Parameterized` classes, no Panel, no engine imports.

- :class:`AppState`: one browser session (truth, globe, editor, model, run, results);
- :class:`TruthState`: the truth dataset and the slice shown;
- :class:`GlobeState`: projection and point of view;
- :class:`ObservationEditor`: observers, window, limits, and the edits on them;
- :class:`RunState`: the run settings and the run in progress (a job in the shared queue);
- :class:`ResultsState`: the output of the last run and what is selected in it;
- drafts (:class:`StationsDraft`, :class:`ProfilesDraft`, :class:`SatelliteDraft`,
  :class:`TrackDraft`): the editable form of one observer each.

They are unit-tested without a browser: set parameters or call methods, then assert on parameters.
"""

from app.state.drafts import (
    DEFAULT_ERRORS,
    Footprint,
    ObserverDraft,
    ProfilesDraft,
    SatelliteDraft,
    StationsDraft,
    TrackDraft,
    Window,
)
from app.state.editor import KIND_LABELS, ObservationEditor
from app.state.globe import GlobeState
from app.state.notice import Notice
from app.state.results import ResultsState
from app.state.run import RunState
from app.state.session import AppState
from app.state.truth import TruthState

__all__ = [
    "AppState",
    "TruthState",
    "GlobeState",
    "ObservationEditor",
    "ObserverDraft",
    "StationsDraft",
    "ProfilesDraft",
    "SatelliteDraft",
    "TrackDraft",
    "Window",
    "Footprint",
    "Notice",
    "RunState",
    "ResultsState",
    "DEFAULT_ERRORS",
    "KIND_LABELS",
]
