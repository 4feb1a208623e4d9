import streamlit as st

from app_support.navigation import charts_preloaded, page_guard

page_guard()  # a deep link on a fresh server must still open inside the app

st.title("Beam search")
st.caption("Greedy decoding keeps one hypothesis; beam search keeps the best few at every step. "
           "Here is every hypothesis it kept, with its score, the one that won, how the length exponent and "
           "the coverage penalty change the ranking, and where the winner differs from greedy.")
with charts_preloaded():  # title first; the heavy imports (torch, spaCy) after
    from app_support.beam_view import render_beam_search

    render_beam_search()
