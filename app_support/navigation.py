"""The one way into the app's pages (the page list itself is `constants.PAGES`).

Streamlit runs a `pages/` file directly (its older multipage mode) for the very first
request of a fresh server when that request is a deep link such as /translate?text=...,
before app.py has registered `st.navigation`. Every page therefore starts with
`page_guard()`: if it was not reached through `run_app`, it runs the app's navigation
itself (which picks the same page from the URL) and stops, so a shared link always
opens the real app: wide layout, our navigation, the page and its URL state."""
from __future__ import annotations

import contextlib
import contextvars

import streamlit as st

from .constants import APP_ICON, APP_TITLE, PAGES

_inside_app = contextvars.ContextVar("attention_lab_inside_app", default=False)


def import_chart_dependencies() -> None:
    """Finish importing numpy and pandas before any chart is built. Plotly uses them only if
    they are already in sys.modules, and takes them from there without waiting for an import
    under way: on a fresh server, one session importing pandas while another drew its first
    chart failed with "partially initialized module 'pandas' has no attribute 'Series'" (many
    visitors opening a shared link at once). An import statement does wait for the import
    under way. The first run of a process pays for the import (the Home page needs pandas
    anyway); later runs find both loaded."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401


def run_app() -> None:
    import_chart_dependencies()
    st.set_page_config(page_title=APP_TITLE, page_icon=APP_ICON, layout="wide")
    pages = [st.Page(p.path, title=p.title, icon=p.icon, default=(i == 0)) for i, p in enumerate(PAGES)]
    token = _inside_app.set(True)
    try:
        st.navigation(pages).run()
    finally:
        _inside_app.reset(token)


def page_guard() -> None:
    """First line of every page: make sure the page runs inside the app's navigation."""
    if not _inside_app.get():
        run_app()
        st.stop()


# The smallest chart Plotly draws: one heatmap cell, 10 px tall, no toolbar.
_PRELOAD_FIGURE = {"data": [{"type": "heatmap", "z": [[0]], "showscale": False}],
                   "layout": {"height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
                              "xaxis": {"visible": False}, "yaxis": {"visible": False}}}


@contextlib.contextmanager
def charts_preloaded():
    """Wrap a page's heavy imports and drawing. On a session's first run, a one-cell
    Plotly chart goes to the browser before the server imports torch and spaCy, so the
    browser fetches and compiles Plotly's 4.7 MB script while the server imports,
    instead of after the real heatmap arrives (about 1 s off the first heatmap on 2
    cores). The placeholder is emptied when the page is drawn."""
    slot = st.empty()                      # always present: element positions stay stable
    if not st.session_state.get("_charts_preloaded"):
        st.session_state["_charts_preloaded"] = True
        slot.plotly_chart(_PRELOAD_FIGURE, config={"staticPlot": True, "displayModeBar": False})
    try:
        yield
    finally:
        slot.empty()
