"""Streamlit glue shared by the pages: cached models, persistent widget state, the URL,
and error handling. The work itself lives in `seq2seq`."""
