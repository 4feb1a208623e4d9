"""Reading a checkpoint's card for a table: numbers as numbers, where it was trained, its size.
Pure functions (no Streamlit), shared by the Home and Compare views."""
from __future__ import annotations

import math


def number(value) -> float:
    """A card metric as a float; NaN when missing or not a number (tables show it as empty)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def trained_on(provenance: dict) -> str:
    """'GPU: NVIDIA H100 80GB HBM3' or 'CPU: x86_64 (2 threads)' from a card's provenance."""
    device, name = provenance.get("device", "?"), provenance.get("device_name", "?")
    if device == "cuda":
        return f"GPU: {name}"
    threads = provenance.get("cpu_threads")
    return f"{str(device).upper()}: {name}" + (f" ({threads} threads)" if threads else "")


def shipped_bytes(card: dict) -> int:
    """Bytes of the files a checkpoint ships, as its card records them (loading verifies them),
    so the table needs no disk access."""
    return sum(int(f.get("bytes", 0)) for f in card.get("files", {}).values() if isinstance(f, dict))
