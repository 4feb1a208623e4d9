"""Shared page plumbing.

- Models load once per process (`st.cache_resource`) and are treated as read-only: many
  sessions use the same objects at once.
- Widget values live in session state under `keep:KEY`, so they survive page switches,
  and the ones that define what is shown go into the URL (`st.query_params`), so a shared
  link opens on the same sentence and model.
- Every call into the engine goes through `guarded`: the user sees a message, never a
  traceback."""
from __future__ import annotations

import logging
import os
import re
import traceback
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from seq2seq.checkpoint import list_checkpoints, read_card
from seq2seq.config import Decoding
from seq2seq.errors import CheckpointError, InputError, Seq2SeqError

from .constants import ARCH_LABELS, EXAMPLES, INPUT_LABELS, TASK_LABELS  # noqa: F401 - used here and by views

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("attention_lab")


def checkpoint_root() -> Path:
    return Path(os.environ.get("ATTENTION_LAB_CHECKPOINTS", ROOT / "checkpoints"))


@st.cache_resource(show_spinner="Loading model…")
def _load_translator(path: str, mtime: float):
    from seq2seq.translate import Translator

    return Translator.load(path, "cpu")


def get_translator(path: str | Path):
    """The cached Translator for a checkpoint directory (reloaded only if its card changes)."""
    card = Path(path) / "card.json"
    mtime = card.stat().st_mtime if card.exists() else 0.0
    return _load_translator(str(path), mtime)


def model_entries(task: str) -> list[dict]:
    """Checkpoints of a task: {name, path, card | None, error | None}. A broken card is
    listed with its error so the page can say what is wrong while the others work."""
    out = []
    for d in list_checkpoints(checkpoint_root(), task):
        try:
            out.append({"name": d.name, "path": str(d), "card": read_card(d), "error": None})
        except CheckpointError as e:
            out.append({"name": d.name, "path": str(d), "card": None, "error": str(e)})
    return out


def model_label(entry: dict) -> str:
    if entry["card"] is None:
        return f"{entry['name']} (unreadable)"
    return f"{entry['name']} · {ARCH_LABELS.get(entry['card']['arch'], entry['card']['arch'])}"


# ------------------------------------------------------------------ decoding (cached)
@st.cache_data(max_entries=128, show_spinner=False)
def _cached_translation(_translator, path: str, card_mtime: float, text: str, beam: int, topk: int,
                        return_tree: bool, prefix: str, alpha: float = 1.0, no_unk: bool = False):
    # `_translator` is not hashed (leading underscore): path + card mtime identify the model
    return _translator.translate(text, beam=beam, topk=topk, return_tree=return_tree, prefix=prefix or None,
                                 alpha=alpha, no_unk=no_unk)


def translate_cached(path: str, text: str, beam: int = 1, topk: int = 5, return_tree: bool = False,
                     prefix: str = "", alpha: float = 1.0, no_unk: bool = False):
    """translator.translate, remembered per (checkpoint, input, settings): a rerun for a display
    setting (fonts, a page switch) must not decode every model again, and saliency (lstm/gru) costs
    one backward pass per output token. Errors are not cached, so they are raised each time."""
    translator = get_translator(path)                         # loads (and verifies) outside the data cache
    card = Path(path) / "card.json"
    mtime = card.stat().st_mtime if card.exists() else 0.0   # a retrained checkpoint is decoded afresh
    return _cached_translation(translator, str(path), mtime, text, int(beam), int(topk), bool(return_tree),
                               prefix or "", float(alpha), bool(no_unk))


# ------------------------------------------------------------------ training snapshots (cached)
@st.cache_resource(show_spinner="Loading a training snapshot…", max_entries=16)
def _load_snapshot_translator(ckpt_path: str, index: int, mtime: float):
    from seq2seq.translate import load_translator

    return load_translator(ckpt_path, snapshot=index)


def snapshot_path(ckpt_path: str | Path, index: int) -> Path:
    from seq2seq.snapshots import snapshot_root

    return snapshot_root(ckpt_path) / f"{int(index):02d}"


def get_snapshot_translator(ckpt_path: str | Path, index: int):
    """The cached Translator of snapshot NN of a checkpoint (read-only, like every cached model;
    reloaded only if its card changes). At most 16 stay loaded: their decodes are cached apart."""
    card = snapshot_path(ckpt_path, index) / "card.json"
    mtime = card.stat().st_mtime if card.exists() else 0.0
    return _load_snapshot_translator(str(ckpt_path), int(index), mtime)


@st.cache_data(max_entries=256, show_spinner=False)
def _cached_snapshot_translation(ckpt_path: str, index: int, card_mtime: float, text: str, beam: int, topk: int):
    return get_snapshot_translator(ckpt_path, index).translate(text, beam=beam, topk=topk)


def snapshot_translate_cached(ckpt_path: str | Path, index: int, text: str, beam: int = 1, topk: int = 5):
    """Snapshot NN's translator.translate, remembered per (snapshot, input, settings)."""
    get_snapshot_translator(ckpt_path, index)                 # loads (and verifies) outside the data cache
    card = snapshot_path(ckpt_path, index) / "card.json"
    mtime = card.stat().st_mtime if card.exists() else 0.0
    return _cached_snapshot_translation(str(ckpt_path), int(index), mtime, text, int(beam), int(topk))


# ------------------------------------------------------------------ persistent state
def _keep(key: str) -> str:
    return f"keep:{key}"


def init_state(key: str, default: Any, query: str | None = None, cast: Callable = str,
               valid: Callable[[Any], bool] | None = None) -> None:
    """Seed widget `key` from (1) the kept value, (2) the URL, (3) the default."""
    store = _keep(key)
    if store not in st.session_state:
        value = default
        if query and query in st.query_params:
            try:
                candidate = cast(st.query_params[query])
                if valid is None or valid(candidate):
                    value = candidate
            except (TypeError, ValueError):
                pass
        st.session_state[store] = value
    if valid is not None and not valid(st.session_state[store]):
        st.session_state[store] = default
    st.session_state[key] = st.session_state[store]


def save_state(key: str) -> None:
    st.session_state[_keep(key)] = st.session_state[key]


def set_state(key: str, value: Any) -> None:
    """Change a widget's value from a callback (e.g. an example picked)."""
    st.session_state[_keep(key)] = value
    st.session_state[key] = value


def kept(key: str, default: Any = None) -> Any:
    return st.session_state.get(_keep(key), default)


def init_tab(key: str, names: list[str], query: str | None = None) -> str:
    """Seed the open tab of `kept_tabs(key, names)` (from the kept value, the URL, or the first
    tab) and return its label, so the page can put it into the URL before the tabs are drawn."""
    init_state(key, names[0], query=query, valid=lambda v: v in names)
    return st.session_state[key]


def kept_tabs(key: str, names: list[str]) -> list:
    """Tabs that remember which one is open and draw only that one: a hidden tab's figures
    and decodings are not computed (`tab.open` is False there), so a rerun for a slider costs
    one tab, not all of them; switching tabs reruns the page. Call init_tab(key, ...) first."""
    return st.tabs(names, key=key, on_change=save_state, args=(key,))


def decoding_query(decoding: Decoding) -> dict:
    """The Translate page's URL parameters for a decoding; None where it is the default (set_url
    and the Test set page's links leave those out)."""
    return {"beam": decoding.beam if decoding.beam != 1 else None,
            "alpha": f"{decoding.alpha:g}" if decoding.alpha != 1.0 else None,
            "no_unk": 1 if decoding.no_unk else None}


def set_url(**params) -> None:
    """Put what defines the view into the URL (only the keys given; empty values dropped)."""
    wanted = {k: str(v) for k, v in params.items() if v not in (None, "")}
    current = {k: st.query_params[k] for k in st.query_params}
    if current != wanted:
        st.query_params.from_dict(wanted)


# ------------------------------------------------------------------ display settings
def sidebar_settings() -> dict:
    """Projector mode (large fonts) and candidate count, kept across pages."""
    with st.sidebar:
        st.caption("Display")
        init_state("projector", False)
        projector = st.toggle("Projector mode (large fonts)", key="projector", on_change=save_state, args=("projector",))
        init_state("topk", 5, cast=int)
        topk = st.slider("Candidates shown per step", 1, 10, key="topk", on_change=save_state, args=("topk",))
        init_state("palette", "default", valid=lambda v: v in PALETTE_CHOICES)
        palette = st.selectbox("Heatmap colours", PALETTE_CHOICES, key="palette", on_change=save_state,
                               args=("palette",), format_func=PALETTE_LABELS.get,
                               help="viridis and cividis stay readable with red-green colour blindness.")
        init_state("image_format", "png", valid=lambda v: v in ("png", "svg"))
        image_format = st.radio("Figure download (camera button)", ("png", "svg"), key="image_format",
                                on_change=save_state, args=("image_format",), format_func=str.upper, horizontal=True,
                                help="What the camera button above each chart saves: PNG (a picture) or SVG "
                                     "(a vector drawing, sharp at any size, for slides and print).")
    if projector:
        st.html("<style>html, body, [class*='st-'] {font-size: 1.25rem;} code {font-size: 1.3rem !important;}</style>")
    return {"font_size": 20 if projector else 14, "topk": topk, "projector": projector, "palette": palette,
            "image_format": image_format, "plotly_config": plotly_config(image_format)}


PALETTE_CHOICES = ("default", "viridis", "cividis")
PALETTE_LABELS = {"default": "default (blues / oranges)", "viridis": "viridis (colour-blind safe)",
                  "cividis": "cividis (colour-blind safe)"}


def plotly_config(image_format: str = "png") -> dict:
    """st.plotly_chart's config with the camera button saving `image_format` (png or svg)."""
    from .constants import PLOTLY_CONFIG

    options = dict(PLOTLY_CONFIG["toImageButtonOptions"], format=image_format)
    if image_format == "svg":
        options.pop("scale", None)          # a vector drawing has no pixel scale
    return dict(PLOTLY_CONFIG, toImageButtonOptions=options)


# ------------------------------------------------------------------ Altair charts with downloads
def file_slug(*parts: str) -> str:
    """A download's file name from plain words: letters, digits, dot, dash and underscore only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(("attention-lab", *parts))).strip("-")


def show_altair(chart, key: str, name: str, **kwargs) -> None:
    """An Altair chart with both downloads: PNG from the chart's own toolbar (Streamlit's
    "Download as PNG"), SVG from a button under it (file `name`.svg), drawn on the server
    only when clicked (Streamlit 1.67 offers Vega-Lite charts no SVG: the vega-embed menu is
    off and `usermeta.embedOptions` cannot bring its actions back). `kwargs` go to
    st.altair_chart."""
    from seq2seq import figures        # the chart builders load only with the first chart

    st.altair_chart(chart, key=key, **kwargs)
    if figures.can_export_svg():
        st.download_button("Download this chart as SVG", data=lambda: figures.chart_svg(chart),
                           file_name=f"{name}.svg", mime="image/svg+xml", on_click="ignore", key=f"{key}.svg",
                           icon=":material/download:",
                           help="A vector drawing, sharp at any size, for slides and print. The chart's toolbar "
                                "(top right, on hover) saves a PNG.")
    else:
        st.caption("SVG download needs the vl-convert-python package (pip install -r requirements.txt); "
                   "the chart's toolbar saves a PNG.")


# ------------------------------------------------------------------ errors
def guarded(fn: Callable, *args, **kwargs):
    """Run `fn`; on failure show a message (never a traceback) and return None."""
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        st.warning(str(e))
    except CheckpointError as e:
        st.error(f"This model cannot be used: {e}")
    except Seq2SeqError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - the page must survive anything
        log.error("unexpected error: %s\n%s", e, traceback.format_exc())
        st.error(f"Something went wrong ({type(e).__name__}). The input was not processed; try another one.")
    return None


def show_source_notes(source) -> None:
    """Notices about the input: truncation and unknown tokens (tokens shown as data, never markup)."""
    if source.truncated:
        st.warning(f"The input has {source.n_tokens} tokens; the model reads at most {len(source.tokens)}, "
                   f"so it was truncated to the first {len(source.tokens)}.")
    unknown = [t for t, u in zip(source.tokens, source.unknown) if u]
    if unknown:
        st.info(f"{len(unknown)} of {len(source.tokens)} input tokens are unknown to this model "
                f"(marked (?) in the figures; it reads them as <unk>):")
        st.text(" · ".join(dict.fromkeys(unknown)))


def translator_for_page(entry: dict, text: str):
    """The model's translator, or None with what is in the way shown (an unusable model,
    nothing typed, a model that fails to load)."""
    if entry["error"]:
        st.error(f"This model cannot be used: {entry['error']}")
        return None
    if not text.strip():
        st.info("Type something above, or pick an example.")
        return None
    return guarded(get_translator, entry["path"])


def decode_for_page(entry: dict, text: str, beam: int, topk: int, prefix: str = "", return_tree: bool = False,
                    alpha: float = 1.0, no_unk: bool = False):
    """From a page's controls to a result: says what is in the way (an unusable model,
    nothing typed, bad input) and returns None, else (translator, result) with the input's
    notices (truncation, unknown tokens) already shown."""
    translator = translator_for_page(entry, text)
    if translator is None:
        return None
    result = guarded(translate_cached, entry["path"], text, beam, topk, return_tree=return_tree, prefix=prefix,
                     alpha=alpha, no_unk=no_unk)
    if result is None:
        return None
    show_source_notes(result.source)
    return translator, result


MAX_CHARS = 5000   # what a text box takes; the model reads at most max_src_len tokens of it


def text_with_examples(task: str, text_key: str, example_key: str, height: int = 90) -> str:
    """An example picker above a text area: picking an example puts it into the text once,
    after which typing is the user's. Call `init_state(text_key, ...)` first."""
    example = st.selectbox("Pick an example", EXAMPLES[task], index=None, placeholder="examples…", key=example_key)
    last = f"{example_key}.last"
    if example is not None and st.session_state.get(last) != example:
        st.session_state[last] = example
        set_state(text_key, example)
    return st.text_area(INPUT_LABELS[task], key=text_key, on_change=save_state, args=(text_key,), height=height,
                        max_chars=MAX_CHARS)
