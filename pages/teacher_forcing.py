import streamlit as st

from app_support.navigation import page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("Teacher forcing vs scheduled sampling")
st.caption("Training feeds the decoder the gold previous token; using the model feeds it its own. "
           "See the schedules that move between the two, what a sweep over them found, where a "
           "model's own mistakes take over, and train one yourself.")
# title first; the heavy imports after
from app_support.teacher_forcing_view import render_page  # noqa: E402

render_page()
