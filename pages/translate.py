import streamlit as st

from app_support.inspector import render_inspector
from app_support.navigation import page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("Translate German → English")
st.caption("Type a German sentence. See the translation, where the decoder looked for each word, "
           "and how it chose each word, step by step.")
render_inspector("translate")
