import streamlit as st

st.title("beam_search")
st.info("This page is being built.")
