"""attention-lab: look inside sequence-to-sequence models. Run: streamlit run app.py"""
import streamlit as st

st.set_page_config(page_title="attention-lab", page_icon="🔎", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/translate.py", title="Translate", icon="🌍"),
    st.Page("pages/reverse.py", title="Reverse", icon="🔁"),
    st.Page("pages/compare.py", title="Compare models", icon="⚖️"),
    st.Page("pages/teacher_forcing.py", title="Teacher forcing", icon="🎓"),
    st.Page("pages/beam_search.py", title="Beam search", icon="🌳"),
]
st.navigation(pages).run()
