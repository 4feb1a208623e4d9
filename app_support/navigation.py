"""The app's pages and the one way into them.

Streamlit runs a `pages/` file directly (its older multipage mode) for the very first
request of a fresh server when that request is a deep link such as /translate?text=...,
before app.py has registered `st.navigation`. Every page therefore starts with
`page_guard()`: if it was not reached through `run_app`, it runs the app's navigation
itself (which picks the same page from the URL) and stops, so a shared link always
opens the real app: wide layout, our navigation, the page and its URL state."""
from __future__ import annotations

import contextvars

import streamlit as st

_inside_app = contextvars.ContextVar("attention_lab_inside_app", default=False)

PAGES = [  # (script relative to app.py, title, icon)
    ("pages/home.py", "Home", "🏠"),
    ("pages/translate.py", "Translate", "🌍"),
    ("pages/reverse.py", "Reverse", "🔁"),
    ("pages/compare.py", "Compare models", "⚖️"),
    ("pages/teacher_forcing.py", "Teacher forcing", "🎓"),
    ("pages/beam_search.py", "Beam search", "🌳"),
]


def run_app() -> None:
    st.set_page_config(page_title="attention-lab", page_icon="🔎", layout="wide")
    pages = [st.Page(path, title=title, icon=icon, default=(i == 0)) for i, (path, title, icon) in enumerate(PAGES)]
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
