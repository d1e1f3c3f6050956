r"""Glossary of dimensions, used in every shape comment and docstring of the project.

Tensors (torch) use one-letter axis names, in this order when several are present:

=====  ======================================================================
B      batch (independent samples in a training step)
M      ensemble members
T      time (states of a trajectory); L when it is the whole window length
K      blanket length (consecutive states seen by the prior at once)
C      channels (standardized physical channels, see :mod:`appa_engine.data.channels`)
Z      latent channels
H, W   latitude and longitude points of the physical grid (H rows from 90 to -90)
h, w   latitude and longitude points of the latent grid
P      pressure levels
N      observations (scalar values)
S      stations / observation locations
D      date features
=====  ======================================================================

A state is ``(C, H, W)``; a trajectory ``(T, C, H, W)``; a latent trajectory ``(T, Z, h, w)``; a
batch of latent blankets ``(B, K, Z, h, w)``. Reshape with :func:`einops.rearrange` using these
names.

xarray objects use WeatherBench2 names instead: ``member``, ``time``, ``level``, ``latitude``,
``longitude`` (and ``channel`` for stacked tensors).
"""

#: Canonical dimension order of a physical dataset (DESIGN.md §4).
CANONICAL_DIMS = ("time", "level", "latitude", "longitude")
#: Canonical dimension order of an ensemble output.
ENSEMBLE_DIMS = ("member", "time", "level", "latitude", "longitude")
