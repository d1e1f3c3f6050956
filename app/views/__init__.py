"""The views: :class:`panel.viewable.Viewer` classes that compose widgets and plots over the state."""
