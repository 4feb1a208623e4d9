"""attention-lab's engine: data, models, decoding, training and checkpoints for
sequence-to-sequence models. No Streamlit in here."""
__version__ = "0.1.0"
