import streamlit as st

from app_support.navigation import charts_preloaded, page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("Reverse a sequence")
st.caption("The classic test: learn to write the input backwards. A perfect attention model looks at "
           "the mirrored position (the red dashed anti-diagonal) at every step.")
with charts_preloaded():  # title first; the heavy imports (torch, spaCy) after
    from app_support.inspector import render_inspector

    render_inspector("reverse")
