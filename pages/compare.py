import streamlit as st

from app_support.navigation import charts_preloaded, page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("Compare models")
st.caption("One input through every model of a task, side by side: what each wrote and where each looked. "
           "Below, the metrics of ours beside the PyTorch tutorial's reference numbers.")
with charts_preloaded():  # title first; the heavy imports (torch, spaCy) after
    from app_support.compare_view import render_compare

    render_compare()
