"""Gradient saliency for models without attention (lstm, gru): now part of
seq2seq/attribution.py, with the other attributions; re-exported here for the app."""
from __future__ import annotations

from .attribution import gradient_saliency

__all__ = ["gradient_saliency"]
