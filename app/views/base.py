"""Small pieces the views share: a set of parameter watchers that can be undone, an alert
that shows the notice a state object keeps for one control, and in-place changes of rendered
Bokeh models."""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

import panel as pn
import param

__all__ = ["Watchers", "NoticeAlert", "change_models"]


def change_models(models: Iterable, change: Callable) -> None:
    """``change(model)`` for each Bokeh model, where its session allows it.

    A model shown in a session is changed at once from the session's own thread (a browser event:
    Bokeh then sends the change), and on the session's next tick from any other thread (Bokeh
    models are changed under their document's lock). A model in no document is changed at once.
    """

    for model in models:
        doc = model.document
        if doc is None or pn.state.curdoc is doc:
            change(model)
        else:
            doc.add_next_tick_callback(partial(change, model))


class Watchers:
    """Watchers a view puts on state objects, removed together when the view is replaced
    (so that a form of an observer no longer shown stops reacting to it)."""

    def __init__(self):
        self._items: list[tuple[param.Parameterized, object]] = []
        self._children: list["Watchers"] = []

    def watch(self, obj: param.Parameterized, fn: Callable, names: list[str] | str) -> None:
        self._items.append((obj, obj.param.watch(fn, names)))

    def adopt(self, child) -> None:
        """Dispose of ``child`` (a view with a ``watchers`` attribute) together with this set."""
        self._children.append(child.watchers)

    def dispose(self) -> None:
        for obj, watcher in self._items:
            obj.param.unwatch(watcher)
        for child in self._children:
            child.dispose()
        self._items, self._children = [], []


class NoticeAlert(pn.viewable.Viewer):
    """Shows ``getattr(owner, name)`` (a :class:`~app.state.notice.Notice` or None) as an alert."""

    def __init__(self, owner: param.Parameterized, name: str, **params):
        super().__init__(**params)
        self._owner, self._name = owner, name
        self._alert = pn.pane.Alert("", alert_type="info", visible=False, margin=(4, 5), sizing_mode="stretch_width")
        self.watchers = Watchers()
        self.watchers.watch(owner, self._update, [name])
        self._update()

    def _update(self, *_events) -> None:
        notice = getattr(self._owner, self._name)
        if notice is None:
            self._alert.visible = False
            return
        self._alert.param.update(object=notice.text, alert_type=notice.level, visible=True)

    def __panel__(self):
        return self._alert
