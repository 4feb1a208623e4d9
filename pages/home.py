import streamlit as st

from app_support.navigation import page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("attention-lab")
st.caption("Look inside sequence-to-sequence models: what they write, and where they look while writing it.")
# title first; the heavy imports after
from app_support.home_view import render_home  # noqa: E402

render_home()
