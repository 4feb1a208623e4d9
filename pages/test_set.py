import streamlit as st

from app_support.navigation import page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("Test set")
st.caption("Every translation model over all of test 2016: sentence BLEU and what the attention did, "
           "per sentence. Read from the statistics file shipped beside each checkpoint.")
# title first; the heavy imports after
from app_support.test_set_view import render_test_set  # noqa: E402

render_test_set()
