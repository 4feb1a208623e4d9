import streamlit as st

st.title("teacher_forcing")
st.info("This page is being built.")
