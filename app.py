"""attention-lab: the Streamlit app (placeholder until the app issue lands)."""
import streamlit as st

st.set_page_config(page_title="attention-lab", layout="wide")
st.title("attention-lab")
st.write("The app is coming. Meanwhile the engine works from the command line: "
         "`python -m seq2seq.translate checkpoints/reverse-bahdanau \"hello world\" --json`.")
