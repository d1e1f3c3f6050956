r"""Satellite orbits, ground tracks and swath geometry on the lat-lon grid.

A polar orbiter observes, at each sample time, every grid cell within a great-circle radius
:math:`r` (its field of view) of its sub-satellite point. This module gives the sub-satellite
points (the *ground track*) of two kinds of orbits and turns them into grid cells.

**Circular orbit.** On a spherical Earth of radius :math:`R_\oplus = 6371` km, a satellite at
altitude :math:`h` moves on a circle of radius :math:`a = R_\oplus + h` with mean motion and
period (Kepler's third law)

.. math:: n = \sqrt{\mu / a^3}, \qquad T = 2\pi / n,
    \qquad \mu = 398600.4418~\text{km}^3/\text{s}^2.

With inclination :math:`i`, right ascension of the ascending node :math:`\Omega` and argument of
latitude :math:`u(t) = u_0 + n t`, the unit position vector in the inertial frame is

.. math::
    \hat{r} = \begin{pmatrix}
        \cos\Omega \cos u - \sin\Omega \sin u \cos i \\
        \sin\Omega \cos u + \cos\Omega \sin u \cos i \\
        \sin u \sin i
    \end{pmatrix},
    \qquad \phi = \arcsin(\sin i \sin u),
    \qquad \lambda = \operatorname{atan2}(\hat{r}_y, \hat{r}_x) - \omega_\oplus t,

with the sidereal rotation rate :math:`\omega_\oplus = 7.2921159 \times 10^{-5}` rad/s. Frame
choice: the inertial frame coincides with the Earth-fixed frame at the orbit's epoch, so
:math:`\Omega` (``raan_deg``) is measured eastwards from the Greenwich meridian at the epoch, and
``phase_deg`` is :math:`u_0`, the angle travelled from the ascending node at the epoch. This is
not astronomical RAAN (which is measured from the vernal equinox); use :class:`TLEOrbit` for a
real satellite. With ``j2=True`` the first-order secular J2 rates of a circular orbit are added,

.. math::
    \dot\Omega = -\tfrac32 n J_2 (R_e/a)^2 \cos i, \qquad
    \dot u = n \left[1 + \tfrac34 J_2 (R_e/a)^2 (8\cos^2 i - 2)\right],

(:math:`R_e = 6378.137` km, the radius :math:`J_2` is defined with); the nodal precession
:math:`\dot\Omega` is what makes a 98.6°, 800 km orbit sun-synchronous.

**TLE orbit.** Two-line elements are propagated with SGP4 (the ``sgp4`` package) to positions in
the TEME frame, which is rotated to the Earth-fixed frame by the Greenwich mean sidereal time
(IAU 1982), the rotation TEME is defined with. UTC is taken for UT1 (they differ by < 0.9 s,
i.e. < 0.004° of longitude) and polar motion (< 0.5″) is ignored. Latitude is geocentric
(spherical Earth), which differs from geodetic latitude by at most 0.19°.

**Swaths.** A grid cell :math:`(\phi_i, \lambda_j)` is seen from the sub-satellite point
:math:`(\phi_0, \lambda_0)` when the haversine of their great-circle distance is within that of
the radius,

.. math:: \sin^2\tfrac{\phi_i - \phi_0}{2} + \cos\phi_0 \cos\phi_i \sin^2\tfrac{\lambda_j -
    \lambda_0}{2} \le \sin^2\tfrac{r}{2}.

Candidates are limited to the rows with :math:`|\phi_i - \phi_0| \le r` and, in each row, to the
longitudes within :math:`\arccos\frac{\cos r - \sin\phi_0\sin\phi_i}{\cos\phi_0\cos\phi_i}` of
:math:`\lambda_0` (wrapping around the dateline). The cells of a row inside the cap form one
arc, so only the few cells around its two computed ends are tested exactly; rows whose arc may
span the whole circle (near a pole) are tested cell by cell. The result equals the haversine test
applied to every cell, at a cost proportional to the number of rows touched.

References:
    | Fundamentals of Astrodynamics and Applications (Vallado, 4th edition, 2013), §3.5 (sidereal
      time) and §9.6 (J2 secular rates).
    | Revisiting Spacetrack Report #3 (Vallado, Crawford, Hujsak, Kelso, 2006), AIAA 2006-6753.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appa_engine.data.grid import Grid, area_weights
from appa_engine.errors import ObservationError

__all__ = [
    "CircularOrbit",
    "TLEOrbit",
    "cells_within",
    "coverage_fraction",
    "gmst",
    "sample_times",
    "swath_mask",
]

logger = logging.getLogger(__name__)

#: Earth's gravitational parameter (km³/s²).
MU_EARTH = 398600.4418
#: Mean radius of the spherical Earth (km).
R_EARTH = 6371.0
#: Equatorial radius that J2 refers to (km).
R_EQUATOR = 6378.137
#: Second zonal harmonic of the geopotential.
J2 = 1.08262668e-3
#: Sidereal rotation rate of the Earth (rad/s).
OMEGA_EARTH = 7.2921159e-5

_NS_PER_DAY = 86_400 * 10**9
_JD_UNIX_EPOCH = 2440587.5  # Julian date of 1970-01-01T00:00


def _as_datetime64(times: Any, *, what: str = "times") -> np.ndarray:
    """``times`` (str, datetime, np.datetime64 or an array of them) as datetime64[ns]."""

    try:
        out = np.asarray(times, dtype="datetime64[ns]")
    except (TypeError, ValueError) as e:
        raise ObservationError(
            f"{what} could not be read as dates ({e})",
            hint="pass numpy datetime64 values or ISO strings such as '2021-01-01T06:00'",
        ) from e
    if np.any(np.isnat(out)):
        raise ObservationError(
            f"{what} contain NaT (not-a-time) values", hint="drop the missing times"
        )
    return out


def _seconds_since(times: np.ndarray, epoch: np.datetime64) -> np.ndarray:
    return (times - epoch).astype("timedelta64[ns]").astype(np.int64) * 1e-9


def _julian_date(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split Julian dates ``(jd, fr)`` of datetime64[ns] times, as ``sgp4`` expects them."""

    ns = times.astype(np.int64)
    days, rest = np.divmod(ns, _NS_PER_DAY)
    return _JD_UNIX_EPOCH + days.astype(np.float64), rest / _NS_PER_DAY


def _wrap_longitude(lon_deg: np.ndarray) -> np.ndarray:
    lon = np.mod(lon_deg, 360.0)
    return np.where(lon >= 360.0, lon - 360.0, lon)  # np.mod(-1e-17, 360) == 360.0


def _gmst_rad(jd: np.ndarray, fr: np.ndarray) -> np.ndarray:
    # IAU 1982 (Aoki et al.), in seconds of time, T in Julian centuries of UT1 from J2000.
    t = ((jd - 2451545.0) + fr) / 36525.0
    rate = 876600.0 * 3600.0 + 8640184.812866
    seconds = 67310.54841 + rate * t + 0.093104 * t**2 - 6.2e-6 * t**3
    return np.mod(seconds, 86400.0) * (2.0 * np.pi / 86400.0)


def gmst(times: Any) -> np.ndarray:
    r"""Greenwich mean sidereal time (IAU 1982) in degrees, in [0, 360).

    .. math:: \theta = 67310.54841^s + (876600^h + 8640184.812866^s) T + 0.093104^s T^2 -
        6.2 \times 10^{-6\,s} T^3, \quad T = (JD_{UT1} - 2451545) / 36525

    Arguments:
        times: Datetimes (UTC, used as UT1), any shape.

    Returns:
        Angles in degrees, same shape as ``times``.
    """

    jd, fr = _julian_date(_as_datetime64(times))
    return _wrap_longitude(np.rad2deg(_gmst_rad(jd, fr)))


def sample_times(start: Any, end: Any, samples_per_hour: float) -> np.ndarray:
    """Regular sample times in the half-open interval ``[start, end)``.

    Arguments:
        start: First time (str, datetime or np.datetime64).
        end: End of the interval, excluded (one day at 60 per hour gives 1440 samples).
        samples_per_hour: Sampling rate, > 0 (the step is rounded to the nanosecond).

    Returns:
        Times, shape ``(N,)``, datetime64[ns].
    """

    t0 = _as_datetime64(start, what="the start time")
    t1 = _as_datetime64(end, what="the end time")
    if t0.ndim or t1.ndim:
        raise ObservationError("start and end must be single times", hint="pass two scalars")
    if not (np.isfinite(samples_per_hour) and samples_per_hour > 0):
        raise ObservationError(
            f"samples_per_hour must be positive, got {samples_per_hour}",
            hint="Appa samples its polar orbiter 60 times per hour",
        )
    if t1 <= t0:
        raise ObservationError(
            f"the end time {t1} is not after the start time {t0}", hint="swap them"
        )
    step = np.timedelta64(int(round(3600e9 / samples_per_hour)), "ns")
    if step <= np.timedelta64(0, "ns"):
        raise ObservationError(
            f"samples_per_hour={samples_per_hour} is too large", hint="use at most 3.6e12"
        )
    return np.arange(t0, t1, step)


@dataclass(frozen=True)
class CircularOrbit:
    r"""A circular orbit around a spherical Earth (see the module docstring for the maths).

    Arguments:
        altitude_km: Altitude above the 6371 km sphere, in (0, 40000] km (Appa: 800).
        inclination_deg: Inclination in [0, 180] degrees; > 90 is retrograde (Appa: 75).
        raan_deg: Longitude of the ascending node, measured from Greenwich at the epoch.
        phase_deg: Argument of latitude at the epoch (0 = crossing the equator northwards).
        epoch: Time at which ``raan_deg`` and ``phase_deg`` hold.
        j2: Whether to add the secular J2 drift of the node and of the argument of latitude.
    """

    altitude_km: float
    inclination_deg: float
    raan_deg: float = 0.0
    phase_deg: float = 0.0
    epoch: str | np.datetime64 = "2000-01-01T00:00"
    j2: bool = field(default=False, kw_only=True)

    def __post_init__(self):
        for name in ("altitude_km", "inclination_deg", "raan_deg", "phase_deg"):
            value = getattr(self, name)
            number = isinstance(value, (int, float, np.integer, np.floating))
            if not number or not np.isfinite(value):
                raise ObservationError(
                    f"{name} must be a finite number, got {value!r}", hint="pass a float"
                )
        if not 0.0 < self.altitude_km <= 40000.0:
            raise ObservationError(
                f"altitude {self.altitude_km} km is outside (0, 40000] km",
                hint="give the height above the surface in km "
                "(low orbits 300-1500, geostationary 35786)",
            )
        if not 0.0 <= self.inclination_deg <= 180.0:
            raise ObservationError(
                f"inclination {self.inclination_deg}° is outside [0, 180]°",
                hint="use 0-90 for prograde and 90-180 for retrograde orbits "
                "(sun-synchronous ≈ 98.6°)",
            )
        epoch = _as_datetime64(self.epoch, what="the orbit epoch")
        if epoch.ndim:
            raise ObservationError(
                "the orbit epoch must be a single time", hint="e.g. '2021-01-01T00:00'"
            )
        object.__setattr__(self, "epoch", epoch[()])

    @property
    def semi_major_axis_km(self) -> float:
        return R_EARTH + float(self.altitude_km)

    @property
    def mean_motion(self) -> float:
        """Keplerian mean motion :math:`n` (rad/s)."""
        return float(np.sqrt(MU_EARTH / self.semi_major_axis_km**3))

    @property
    def period_s(self) -> float:
        """Keplerian period :math:`T = 2\\pi\\sqrt{a^3/\\mu}` (s)."""
        return 2.0 * np.pi / self.mean_motion

    @property
    def rates(self) -> tuple[float, float]:
        """``(d_raan, d_u)``: rates of the node and of the argument of latitude (rad/s)."""

        n = self.mean_motion
        if not self.j2:
            return 0.0, n
        k = J2 * (R_EQUATOR / self.semi_major_axis_km) ** 2
        cos_i = np.cos(np.deg2rad(self.inclination_deg))
        d_raan = -1.5 * n * k * cos_i
        d_u = n * (1.0 + 0.75 * k * (8.0 * cos_i**2 - 2.0))
        return float(d_raan), float(d_u)

    def ground_track(self, times: Any) -> tuple[np.ndarray, np.ndarray]:
        """Sub-satellite points at ``times``.

        Arguments:
            times: Datetimes, any shape.

        Returns:
            ``(lon_deg, lat_deg)``, each of the shape of ``times``; longitude in [0, 360).
        """

        t = _seconds_since(_as_datetime64(times), self.epoch)
        d_raan, d_u = self.rates
        inc = np.deg2rad(self.inclination_deg)
        raan = np.deg2rad(self.raan_deg) + d_raan * t
        u = np.deg2rad(self.phase_deg) + d_u * t
        cos_u, sin_u = np.cos(u), np.sin(u)
        x = np.cos(raan) * cos_u - np.sin(raan) * sin_u * np.cos(inc)
        y = np.sin(raan) * cos_u + np.cos(raan) * sin_u * np.cos(inc)
        z = sin_u * np.sin(inc)
        lat = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
        lon = np.rad2deg(np.arctan2(y, x) - OMEGA_EARTH * t)
        return _wrap_longitude(lon), lat


@dataclass(frozen=True)
class TLEOrbit:
    """A real satellite from its two-line elements, propagated with SGP4.

    Arguments:
        line1: First TLE line (starts with ``1 ``, 69 characters with its checksum).
        line2: Second TLE line (starts with ``2 ``).
    """

    line1: str
    line2: str
    _satrec: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        from sgp4.api import Satrec
        from sgp4.earth_gravity import wgs72
        from sgp4.io import twoline2rv, verify_checksum

        if not isinstance(self.line1, str) or not isinstance(self.line2, str):
            raise ObservationError("TLE lines must be strings", hint="pass the two lines as text")
        line1, line2 = self.line1.strip(), self.line2.strip()
        object.__setattr__(self, "line1", line1)
        object.__setattr__(self, "line2", line2)
        hint = (
            "copy both lines exactly (every column matters, 69 characters each, no name line), "
            "e.g. from CelesTrak or Space-Track"
        )
        try:
            verify_checksum(line1, line2)
            twoline2rv(line1, line2, wgs72)  # the strict reference parser, for its messages
        except ValueError as e:
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            if lines[0].strip() == "TLE format error" and len(lines) >= 3:
                message = (
                    "malformed TLE: a field is out of its column (sgp4: 'TLE format error'); "
                    f"expected layout '{lines[-2].strip()}', line given '{lines[-1].strip()}'"
                )
            else:
                said = " ".join(line.strip() for line in lines)
                message = f"malformed TLE: sgp4 says '{said}'"
            raise ObservationError(message, hint=hint) from e
        satrec = Satrec.twoline2rv(line1, line2)
        if satrec.error:
            raise ObservationError(
                f"the TLE elements are invalid: {_sgp4_error(satrec.error)}", hint=hint
            )
        object.__setattr__(self, "_satrec", satrec)

    @classmethod
    def from_text(cls, text: str) -> "TLEOrbit":
        """Read the first TLE of a text block (two lines, or three with a name line first)."""

        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        ones = [k for k, line in enumerate(lines) if line.startswith("1 ")]
        if not ones or ones[0] + 1 >= len(lines):
            raise ObservationError(
                "no TLE found in the text", hint="paste the two lines that start with '1 ' and '2 '"
            )
        return cls(lines[ones[0]], lines[ones[0] + 1])

    @property
    def epoch(self) -> np.datetime64:
        """Epoch of the elements (UTC)."""
        days = self._satrec.jdsatepoch - _JD_UNIX_EPOCH + self._satrec.jdsatepochF
        return np.datetime64(int(round(days * _NS_PER_DAY)), "ns")

    @property
    def period_s(self) -> float:
        """Period from the mean motion of the elements (s)."""
        return 2.0 * np.pi / self._satrec.no_kozai * 60.0

    def teme(self, times: Any) -> np.ndarray:
        """Positions in the TEME frame (km), shape ``times.shape + (3,)``."""

        times = _as_datetime64(times)
        age = np.abs(times - self.epoch).max(initial=np.timedelta64(0, "ns"))
        days = age / np.timedelta64(1, "D")
        if days > 30:
            logger.warning("propagating a TLE %.0f days from its epoch: expect large errors", days)
        jd, fr = _julian_date(times.ravel())
        error, r, _ = self._satrec.sgp4_array(jd, fr)
        if np.any(error):
            k = int(np.flatnonzero(error)[0])
            raise ObservationError(
                f"SGP4 failed at {times.ravel()[k]}: {_sgp4_error(int(error[k]))}",
                hint="use times closer to the TLE epoch, or a more recent TLE",
            )
        return r.reshape(times.shape + (3,))

    def ground_track(self, times: Any) -> tuple[np.ndarray, np.ndarray]:
        """Sub-satellite points at ``times`` (geocentric latitude, spherical Earth).

        Arguments:
            times: Datetimes (UTC), any shape.

        Returns:
            ``(lon_deg, lat_deg)``, each of the shape of ``times``; longitude in [0, 360).
        """

        times = _as_datetime64(times)
        r = self.teme(times)
        theta = _gmst_rad(*_julian_date(times))
        x, y, z = r[..., 0], r[..., 1], r[..., 2]
        # Earth-fixed = R_z(theta) · TEME.
        x_e = np.cos(theta) * x + np.sin(theta) * y
        y_e = -np.sin(theta) * x + np.cos(theta) * y
        lat = np.rad2deg(np.arctan2(z, np.hypot(x_e, y_e)))
        lon = np.rad2deg(np.arctan2(y_e, x_e))
        return _wrap_longitude(lon), lat


def _sgp4_error(code: int) -> str:
    from sgp4.api import SGP4_ERRORS

    return f"error {code}, {SGP4_ERRORS.get(code, 'unknown error')}"


def _check_points(
    grid: Grid, lon: Any, lat: Any, radius_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(grid, Grid):
        raise ObservationError(
            f"expected a Grid, got {type(grid).__name__}", hint="build one with Grid.regular"
        )
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.shape != lat.shape:
        raise ObservationError(
            f"longitudes {lon.shape} and latitudes {lat.shape} differ in shape",
            hint="pass one pair per point"
        )
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise ObservationError(
            "point coordinates contain NaN or inf", hint="drop the missing points first"
        )
    if np.any(np.abs(lat) > 90.0):
        raise ObservationError(
            f"latitudes must lie in [-90, 90], got up to {np.abs(lat).max():g}",
            hint="check that longitude and latitude are not swapped",
        )
    if not (np.isfinite(radius_deg) and 0.0 < radius_deg < 90.0):
        raise ObservationError(
            f"the swath radius {radius_deg}° is outside (0, 90)°",
            hint="give the great-circle radius of the field of view in degrees (Appa: 5)",
        )
    return np.mod(lon.ravel(), 360.0), lat.ravel()


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments ``k`` of ``counts[k]`` items: owner ``k`` and position ``0..counts[k]-1``."""

    owner = np.repeat(np.arange(counts.size), counts)
    offsets = np.cumsum(counts) - counts
    return owner, np.arange(owner.size) - offsets[owner]


@dataclass
class _Rows:
    """The cells within the radius, row by row: ``(point, row)`` pairs with an interval of columns
    ``lo, lo + 1, ..., lo + count - 1`` (modulo W), plus explicit cells for rows whose candidate
    interval spans the whole circle (near the poles)."""

    point: np.ndarray  # (pairs,)
    row: np.ndarray  # (pairs,)
    lo: np.ndarray  # (pairs,), in [0, W)
    count: np.ndarray  # (pairs,)
    extra_point: np.ndarray  # (cells,)
    extra_flat: np.ndarray  # (cells,)


def _rows(grid: Grid, lon: np.ndarray, lat: np.ndarray, radius_deg: float) -> _Rows:
    H, W = grid.shape
    lat_grid = np.deg2rad(grid.lat)
    lon_grid = np.deg2rad(grid.lon)
    lat_top, dlat = grid.latitude[0], grid.dlat
    lon_first, dlon = grid.longitude[0], grid.dlon
    r = np.deg2rad(radius_deg)
    hav_r = np.sin(r / 2) ** 2

    # Candidate rows: |lat_i - lat_0| <= r, with one row of margin on each side.
    i_lo = np.clip(np.floor((lat_top - lat - radius_deg) / dlat).astype(np.int64) - 1, 0, H - 1)
    i_hi = np.clip(np.ceil((lat_top - lat + radius_deg) / dlat).astype(np.int64) + 1, 0, H - 1)
    point, k = _segments(i_hi - i_lo + 1)
    row = i_lo[point] + k

    # Half-width of the cap along each row: cos(dlon) >= c.
    phi_0 = np.deg2rad(lat[point])
    phi_i = lat_grid[row]
    cos_cos = np.cos(phi_0) * np.cos(phi_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (np.cos(r) - np.sin(phi_0) * np.sin(phi_i)) / cos_cos
    keep = (cos_cos < 1e-12) | (c <= 1.0 + 1e-9)  # rows farther than r are dropped
    point, row, c, cos_cos = point[keep], row[keep], c[keep], cos_cos[keep]
    lam_0 = np.deg2rad(lon[point])
    a = np.sin((lat_grid[row] - np.deg2rad(lat[point])) / 2) ** 2

    def inside(pair: np.ndarray, col: np.ndarray) -> np.ndarray:
        # The exact test, shared by every cell: haversine(distance) <= haversine(r).
        return a[pair] + cos_cos[pair] * np.sin((lon_grid[col] - lam_0[pair]) / 2) ** 2 <= hav_r

    half = np.rad2deg(np.arccos(np.clip(c, -1.0, 1.0)))
    lo_guess = np.ceil((lon[point] - half - lon_first) / dlon).astype(np.int64)
    hi_guess = np.floor((lon[point] + half - lon_first) / dlon).astype(np.int64)
    full = (cos_cos < 1e-12) | (c <= -1.0) | (hi_guess - lo_guess + 10 >= W)

    # The cells of a row inside the cap form one arc, and the computed half-width is exact to
    # far better than a cell: cells 2+ columns inside [lo_guess, hi_guess] are inside, and the
    # true ends lie within 2 columns of the guesses. Test windows of 10 columns at each end.
    part = np.flatnonzero(~full)
    offsets = np.arange(10)
    left = lo_guess[part, None] - 2 + offsets  # (pairs, 10)
    right = hi_guess[part, None] - 7 + offsets
    in_left = inside(part[:, None], np.mod(left, W))
    in_right = inside(part[:, None], np.mod(right, W))
    any_in = in_left.any(axis=1)
    lo = left[np.arange(part.size), np.argmax(in_left, axis=1)]
    hi = right[np.arange(part.size), 9 - np.argmax(in_right[:, ::-1], axis=1)]
    count = np.where(any_in, hi - lo + 1, 0)

    # Whole rows near the poles: test every column, in blocks to bound memory.
    extra_point, extra_flat = [], []
    whole = np.flatnonzero(full)
    for s in range(0, whole.size, max(1, 2**21 // W)):
        block = whole[s : s + max(1, 2**21 // W)]
        hit_pair, hit_col = np.nonzero(inside(block[:, None], np.arange(W)[None, :]))
        extra_point.append(point[block][hit_pair])
        extra_flat.append(row[block][hit_pair] * W + hit_col)
    empty = np.zeros(0, dtype=np.int64)
    return _Rows(
        point=point[part],
        row=row[part],
        lo=np.mod(lo, W),
        count=count,
        extra_point=np.concatenate(extra_point) if extra_point else empty,
        extra_flat=np.concatenate(extra_flat) if extra_flat else empty,
    )


def _chunks(n: int, grid: Grid, radius_deg: float) -> list[slice]:
    # Bound the number of (point, row) pairs handled at once (each costs ~20 cell tests).
    rows = min(grid.shape[0], 2 * radius_deg / grid.dlat + 3)
    step = max(1, int(2e5 // rows))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def cells_within(
    grid: Grid, lon: Any, lat: Any, radius_deg: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grid cells whose centre lies within a great-circle radius of each point.

    Arguments:
        grid: The grid (latitude descending, longitude in [0, 360)).
        lon: Longitudes of the points in degrees (any range), shape ``(S,)`` (other shapes are
            flattened).
        lat: Latitudes of the points in degrees, same shape.
        radius_deg: Great-circle radius in degrees, in (0, 90).

    Returns:
        One ``(i, j)`` pair of int64 index arrays per point (row and column indices into
        ``(H, W)``), sorted by row and then by column.
    """

    lon, lat = _check_points(grid, lon, lat, radius_deg)
    W = grid.shape[1]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for chunk in _chunks(lon.size, grid, radius_deg):
        n = chunk.stop - chunk.start
        rows = _rows(grid, lon[chunk], lat[chunk], radius_deg)
        # Split intervals at the dateline into [0, rest) then [lo, W), so that each piece is
        # ascending and pieces stay in (point, row, column) order.
        stop = np.minimum(rows.lo + rows.count, W)
        rest = rows.lo + rows.count - stop
        start = np.stack([np.zeros_like(rows.lo), rows.lo], axis=1).ravel()
        count = np.stack([rest, stop - rows.lo], axis=1).ravel()
        point = np.repeat(rows.point, 2)
        row = np.repeat(rows.row, 2)
        # Cell c of piece p has column start[p] + c - offset[p].
        offset = np.cumsum(count) - count
        i = np.repeat(row, count)
        j = np.arange(i.size) + np.repeat(start - offset, count)
        per_point = np.bincount(point, weights=count, minlength=n).astype(np.int64)
        bounds = np.concatenate([[0], np.cumsum(per_point)])
        if rows.extra_point.size:  # whole rows near a pole: merge and re-sort
            p = np.concatenate([np.repeat(np.arange(n), np.diff(bounds)), rows.extra_point])
            i = np.concatenate([i, rows.extra_flat // W])
            j = np.concatenate([j, rows.extra_flat % W])
            order = np.lexsort((j, i, p))
            i, j = i[order], j[order]
            bounds = np.concatenate([[0], np.cumsum(np.bincount(p, minlength=n))])
        for s in range(n):
            out.append((i[bounds[s] : bounds[s + 1]], j[bounds[s] : bounds[s + 1]]))
    return out


def swath_mask(grid: Grid, lon: Any, lat: Any, radius_deg: float) -> np.ndarray:
    """Union of the cells within ``radius_deg`` of any of the points.

    Arguments:
        grid: The grid.
        lon: Longitudes of the points (e.g. a ground track) in degrees, shape ``(N,)``.
        lat: Latitudes of the points in degrees, shape ``(N,)``.
        radius_deg: Great-circle radius in degrees, in (0, 90).

    Returns:
        Boolean mask, shape ``(H, W)``.
    """

    lon, lat = _check_points(grid, lon, lat, radius_deg)
    H, W = grid.shape
    if lon.size == 0:
        return np.zeros((H, W), dtype=bool)
    # Mark each interval with +1 at its start and -1 past its end (split at the dateline); a
    # cumulative sum along the row then counts the intervals covering each cell.
    plus, minus, extra = [], [], []
    for chunk in _chunks(lon.size, grid, radius_deg):
        rows = _rows(grid, lon[chunk], lat[chunk], radius_deg)
        base = rows.row * (W + 1)
        stop = np.minimum(rows.lo + rows.count, W)  # end of the part east of lo
        rest = rows.lo + rows.count - stop  # columns wrapped to [0, rest)
        plus += [base + rows.lo, base[rest > 0]]
        minus += [base + stop, (base + rest)[rest > 0]]
        extra.append(rows.extra_flat)
    size = H * (W + 1)
    marks = np.bincount(np.concatenate(plus), minlength=size)
    marks -= np.bincount(np.concatenate(minus), minlength=size)
    mask = np.cumsum(marks.reshape(H, W + 1), axis=1)[:, :W] > 0
    mask.reshape(-1)[np.concatenate(extra)] = True
    return mask


def coverage_fraction(grid: Grid, mask: Any) -> float:
    """Area-weighted fraction of the globe covered by ``mask``.

    Arguments:
        grid: The grid.
        mask: Boolean mask, shape ``(H, W)``.

    Returns:
        The fraction in [0, 1], weighting rows with :func:`appa_engine.data.grid.area_weights`.
    """

    mask = np.asarray(mask)
    if mask.shape != grid.shape:
        raise ObservationError(
            f"the mask has shape {mask.shape}, the grid {grid.shape}",
            hint="build it with swath_mask(grid, ...)"
        )
    w = area_weights(grid.lat)
    return float(np.sum(w * mask.astype(np.float64).mean(axis=1)) / np.sum(w))
