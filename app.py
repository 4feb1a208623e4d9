"""attention-lab: look inside sequence-to-sequence models.  Run: streamlit run app.py"""
from app_support.navigation import run_app

run_app()
