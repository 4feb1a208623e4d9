import streamlit as st

from app_support.navigation import charts_preloaded, page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("Translate German → English")
st.caption("Type a German sentence. See the translation, where the decoder looked for each word, "
           "and how it chose each word, step by step.")
with charts_preloaded():  # title first; the heavy imports (torch, spaCy) after
    from app_support.inspector import render_inspector

    render_inspector("translate")
