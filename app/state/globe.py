"""How the globe is shown: projection, point of view and layers."""

from __future__ import annotations

import param

__all__ = ["GlobeState"]


class GlobeState(param.Parameterized):
    """The view of the globe (the projection is rebuilt when any of the first three change)."""

    projection = param.Selector(default="orthographic", objects=["orthographic", "flat"], doc="Globe or flat map")
    central_longitude = param.Number(default=10.0, bounds=(-180.0, 180.0), step=5.0, doc="Longitude at the centre (°E)")
    central_latitude = param.Number(default=35.0, bounds=(-90.0, 90.0), step=5.0, doc="Latitude at the centre (°N)")
    show_field = param.Boolean(default=True, doc="Show the truth field")
    show_coastlines = param.Boolean(default=True, doc="Show coastlines")
    show_graticule = param.Boolean(default=True, doc="Show meridians and parallels every 30°")
    show_footprints = param.Boolean(default=True, doc="Show the cells each swath observes")

    def look_at(self, lon: float, lat: float) -> None:
        """Turn the globe so that (lon, lat) faces the viewer."""

        self.param.update(
            central_longitude=((float(lon) + 180.0) % 360.0) - 180.0,
            central_latitude=max(-90.0, min(90.0, float(lat))),
        )
