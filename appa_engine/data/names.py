r"""The variable vocabulary: WeatherBench2 names, their units, levels and CDS / GRIB short names.

Every dataset is renamed to WeatherBench2 (WB2) long names (DESIGN.md §4). Each known variable
has one expected unit, written in ECMWF's spelling (``m**2 s**-2``, ``K``, ``m s**-1``,
``kg kg**-1``, ``Pa``, ``Pa s**-1``, ``J m**-2``, ``1`` for fractions), and is either a *level*
variable ``(time, level, latitude, longitude)``, a *surface* variable ``(time, latitude,
longitude)`` or a *static* field ``(latitude, longitude)``.

Unit strings are normalised before they are compared: ``"m2 s-2"``, ``"m**2 s**-2"``,
``"m^2/s^2"`` and ``"m2/s2"`` all read as :math:`\mathrm{m^2\,s^{-2}}`; ``"kelvin"`` as ``K``;
``"(0 - 1)"``, ``"1"``, ``"fraction"`` as ``1``. A known unit that differs from the expected one
(``hPa`` for a pressure in ``Pa``) or an unreadable one is an error: nothing is converted silently.

Short names are those of CDS NetCDF files and of cfgrib (``z``, ``t``, ``u``, ``v``, ``q``, ``w``,
``t2m``, ``u10``, ``v10``, ``msl``, ``sp``, ``tp``, ``sst``, …), plus the GRIB ``shortName``
spellings (``2t``, ``10u``, …). ``z`` is ``geopotential`` on pressure levels and
``geopotential_at_surface`` (the orography) in single-level files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appa_engine.errors import DataError

__all__ = [
    "Variable",
    "VARIABLES",
    "WB2_LEVELS",
    "ERA5_LEVELS",
    "lookup",
    "canonical_name",
    "normalize_units",
    "check_units",
]

#: The 13 pressure levels (hPa) of the WeatherBench2 stores, top to bottom.
WB2_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
#: The 37 pressure levels (hPa) of ERA5 (and of the ARCO-ERA5 store), top to bottom.
ERA5_LEVELS = (
    1, 2, 3, 5, 7, 10, 20, 30, 50, 70, 100, 125, 150, 175, 200, 225, 250, 300, 350, 400, 450,
    500, 550, 600, 650, 700, 750, 775, 800, 825, 850, 875, 900, 925, 950, 975, 1000,
)  # fmt: skip


@dataclass(frozen=True)
class Variable:
    """One physical variable of the vocabulary.

    Arguments:
        name: WeatherBench2 long name (``"2m_temperature"``).
        units: Expected unit, normalised spelling (``"K"``).
        levels: Whether it lives on pressure levels.
        short_names: CDS / cfgrib / GRIB short names, the cfgrib one first (``("t2m", "2t")``).
        long_name: Human-readable description.
        param_id: ECMWF GRIB parameter id (``None`` for WB2-derived variables).
        static: Whether it is time-independent (orography, land-sea mask).
        grib_level: For surface variables written to GRIB: ``(typeOfLevel, level)``.
    """

    name: str
    units: str
    levels: bool
    short_names: tuple[str, ...]
    long_name: str
    param_id: int | None = None
    static: bool = False
    grib_level: tuple[str, int] = ("surface", 0)


def _v(name, units, levels, short, long_name, pid=None, *, static=False, grib=("surface", 0)):
    return Variable(name, units, levels, tuple(short), long_name, pid, static, grib)


_HAG2, _HAG10, _HAG100 = (("heightAboveGround", h) for h in (2, 10, 100))

#: Every known variable, by WB2 name.
VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        # Pressure-level variables.
        _v("geopotential", "m**2 s**-2", True, ["z"], "Geopotential", 129),
        _v("temperature", "K", True, ["t"], "Temperature", 130),
        _v("u_component_of_wind", "m s**-1", True, ["u"], "U component of wind", 131),
        _v("v_component_of_wind", "m s**-1", True, ["v"], "V component of wind", 132),
        _v("specific_humidity", "kg kg**-1", True, ["q"], "Specific humidity", 133),
        _v("vertical_velocity", "Pa s**-1", True, ["w"], "Vertical velocity", 135),
        _v("relative_humidity", "%", True, ["r"], "Relative humidity", 157),
        _v("divergence", "s**-1", True, ["d"], "Divergence", 155),
        _v("vorticity", "s**-1", True, ["vo"], "Vorticity (relative)", 138),
        _v("potential_vorticity", "K m**2 kg**-1 s**-1", True, ["pv"], "Potential vorticity", 60),
        _v("ozone_mass_mixing_ratio", "kg kg**-1", True, ["o3"], "Ozone mass mixing ratio", 203),
        _v("fraction_of_cloud_cover", "1", True, ["cc"], "Fraction of cloud cover", 248),
        _v("specific_cloud_liquid_water_content", "kg kg**-1", True, ["clwc"],
           "Specific cloud liquid water content", 246),
        _v("specific_cloud_ice_water_content", "kg kg**-1", True, ["ciwc"],
           "Specific cloud ice water content", 247),
        _v("wind_speed", "m s**-1", True, [], "Wind speed"),
        # Surface variables.
        _v("2m_temperature", "K", False, ["t2m", "2t"], "2 metre temperature", 167, grib=_HAG2),
        _v("2m_dewpoint_temperature", "K", False, ["d2m", "2d"], "2 metre dewpoint temperature",
           168, grib=_HAG2),
        _v("10m_u_component_of_wind", "m s**-1", False, ["u10", "10u"],
           "10 metre U wind component", 165, grib=_HAG10),
        _v("10m_v_component_of_wind", "m s**-1", False, ["v10", "10v"],
           "10 metre V wind component", 166, grib=_HAG10),
        _v("10m_wind_speed", "m s**-1", False, ["si10", "10si"], "10 metre wind speed", 207,
           grib=_HAG10),
        _v("100m_u_component_of_wind", "m s**-1", False, ["u100", "100u"],
           "100 metre U wind component", 228246, grib=_HAG100),
        _v("100m_v_component_of_wind", "m s**-1", False, ["v100", "100v"],
           "100 metre V wind component", 228247, grib=_HAG100),
        _v("mean_sea_level_pressure", "Pa", False, ["msl"], "Mean sea level pressure", 151,
           grib=("meanSea", 0)),
        _v("surface_pressure", "Pa", False, ["sp"], "Surface pressure", 134),
        _v("total_precipitation", "m", False, ["tp"], "Total precipitation", 228),
        _v("total_precipitation_6hr", "m", False, [], "Total precipitation over 6 hours"),
        _v("total_precipitation_24hr", "m", False, [], "Total precipitation over 24 hours"),
        _v("sea_surface_temperature", "K", False, ["sst"], "Sea surface temperature", 34),
        _v("skin_temperature", "K", False, ["skt"], "Skin temperature", 235),
        _v("total_column_water_vapour", "kg m**-2", False, ["tcwv"],
           "Total column vertically-integrated water vapour", 137),
        _v("total_cloud_cover", "1", False, ["tcc"], "Total cloud cover", 164),
        _v("sea_ice_cover", "1", False, ["siconc", "ci"], "Sea ice area fraction", 31),
        _v("toa_incident_solar_radiation", "J m**-2", False, ["tisr"],
           "TOA incident solar radiation", 212),
        # Static fields.
        _v("geopotential_at_surface", "m**2 s**-2", False, ["z"], "Geopotential at the surface",
           129, static=True),
        _v("land_sea_mask", "1", False, ["lsm"], "Land-sea mask", 172, static=True),
    )
}  # fmt: skip

_SHORT: dict[str, str] = {}
for _var in VARIABLES.values():
    for _s in _var.short_names:
        _SHORT.setdefault(_s, _var.name)  # "z" → geopotential (levels decide, see canonical_name)


def canonical_name(name: str, *, has_levels: bool | None = None) -> str | None:
    """The WB2 name of a long or short variable name, or ``None`` if it is unknown.

    Arguments:
        name: A WB2 long name (returned as is) or a CDS / cfgrib / GRIB short name.
        has_levels: Whether the variable has a level dimension; resolves ``z``
            (``geopotential`` with levels, ``geopotential_at_surface`` without).
    """

    if name in VARIABLES:
        return name
    if name == "z" and has_levels is False:
        return "geopotential_at_surface"
    return _SHORT.get(name)


def lookup(name: str) -> Variable:
    """The :class:`Variable` of a long or short name; :class:`DataError` if unknown."""

    long = canonical_name(name)
    if long is None:
        raise DataError(
            f"unknown variable '{name}'",
            hint=f"known variables: {', '.join(VARIABLES)}",
        )
    return VARIABLES[long]


# ---------------------------------------------------------------------------------------------
# Units

_DIMENSIONLESS = {"1", "(0 - 1)", "(0-1)", "0-1", "0 - 1", "dimensionless", "fraction", "~", "-"}
_SYMBOLS = {
    "k": "K", "kelvin": "K", "kelvins": "K", "degk": "K", "deg_k": "K",
    "pa": "Pa", "pascal": "Pa", "pascals": "Pa",
    "hpa": "hPa", "mb": "hPa", "mbar": "hPa", "millibar": "hPa", "millibars": "hPa",
    "hectopascal": "hPa", "hectopascals": "hPa",
    "m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "mm": "mm", "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
    "km": "km", "s": "s", "sec": "s", "second": "s", "seconds": "s",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "g": "g",
    "j": "J", "joule": "J", "joules": "J", "w": "W", "watt": "W", "watts": "W",
    "%": "%", "percent": "%",
    "degc": "degC", "deg_c": "degC", "celsius": "degC", "degrees_celsius": "degC",
}  # fmt: skip
_FACTOR = re.compile(r"\s*([A-Za-z_%]+)\s*(?:\*\*|\^)?\s*([+-]?\d+)?\s*")


def normalize_units(units: str) -> str:
    """One spelling per unit: ``"m^2/s^2"`` → ``"m**2 s**-2"``, ``"kelvin"`` → ``"K"``.

    Factors are kept in order (``kg kg**-1`` is not simplified to ``1``). A string that cannot be
    parsed is returned stripped, so that comparing it with an expected unit fails.
    """

    text = str(units).strip()
    if text in _DIMENSIONLESS or text.lower() in _DIMENSIONLESS:
        return "1"
    if text == "%":
        return "%"
    factors: list[tuple[str, int]] = []
    for i, part in enumerate(text.replace("·", " ").replace("*", " * ").split("/")):
        # Everything but the first factor after a "/" stays in the numerator ("m/s2 x" = m s-2 x).
        part = re.sub(r"\s*\*\s*\*\s*", "**", part).replace(" * ", " ").replace(".", " ")
        pos, first = 0, True
        if i == 0 and re.match(r"\s*1\s*$", part):  # "1/s"
            continue
        while pos < len(part):
            m = _FACTOR.match(part, pos)
            if m is None or m.end() == pos:
                return text
            symbol = _SYMBOLS.get(m.group(1).lower())
            if symbol is None:
                return text
            power = int(m.group(2)) if m.group(2) else 1
            if i > 0 and first:
                power = -power
            factors.append((symbol, power))
            pos, first = m.end(), False
        if i > 0 and first:  # "m/" with nothing after the slash
            return text
    if not factors:
        return text
    return " ".join(s if p == 1 else f"{s}**{p}" for s, p in factors)


def check_units(name: str, units: str | None) -> str:
    """Check the unit of a known variable and return its normalised spelling.

    Arguments:
        name: WB2 name of the variable.
        units: Its ``units`` attribute; ``None`` or ``""`` (no attribute) is accepted as the
            expected unit.

    Raises:
        DataError: naming the variable, the unit found and the unit expected.
    """

    expected = VARIABLES[name].units
    if units is None or str(units).strip() == "":
        return expected
    found = normalize_units(units)
    if found != expected:
        raise DataError(
            f"variable '{name}' has units '{units}', expected '{expected}'",
            hint=f"convert '{name}' to {expected} (or fix its 'units' attribute) before reading it",
        )
    return expected
