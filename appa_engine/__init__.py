"""Appa Studio's engine: score-based data assimilation of the global atmosphere.

The public API is re-exported here and imported lazily, so ``import appa_engine`` is cheap:

- :func:`open_dataset`: read ERA5-like data (zarr, NetCDF, GRIB, ``gs://``) in canonical form.
- :class:`ChannelSpec`: stack a dataset into a ``(T, C, H, W)`` tensor and back.
- :func:`load_model`: a trained model package (``"default"`` or a directory).
- :class:`Assimilator`: reanalysis, filtering and forecasting from observations.
- :class:`ObservationSet`, :class:`Stations`, :class:`Scenario`: observations and runs as data.

Sub-packages: ``data`` (readers, channels, statistics, training windows, synthetic planet),
``nn`` (backbones), ``diffusion`` (schedules, denoisers, samplers, guidance), ``observations``
(observers and operators), ``sampling`` (blanket-stitched latent sampling), ``tasks``
(reanalysis, filtering, forecasting), ``metrics``, ``train``, ``io``, ``cli``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "open_dataset": "appa_engine.data.readers",
    "ChannelSpec": "appa_engine.data.channels",
    "Grid": "appa_engine.data.grid",
    "Statistics": "appa_engine.data.stats",
    "load_model": "appa_engine.io.package",
    "Assimilator": "appa_engine.tasks.assimilator",
    "ObservationSet": "appa_engine.observations.observers",
    "Stations": "appa_engine.observations.observers",
    "Scenario": "appa_engine.observations.scenario",
    "AppaError": "appa_engine.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'appa_engine' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
