"""The same hostile inputs through every page that takes text: a message or a result on the
page, never an exception, and user text never rendered as HTML or Markdown."""
import json

import pytest

from apptest_util import elements, messages, open_page, open_tab, plotly_figures
from conftest import ROOT

HAS_TRANSLATE = (ROOT / "checkpoints" / "translate-bahdanau").is_dir()
PAGES = [
    ("pages/translate.py", {"model": "translate-bahdanau"}),
    ("pages/reverse.py", {}),
    ("pages/compare.py", {"task": "translate"}),
    ("pages/compare.py", {"task": "reverse"}),
    ("pages/beam_search.py", {"model": "translate-luong", "width": "3"}),
    ("pages/teacher_forcing.py", {}),
]
INPUTS = {
    "blank": " \t\n ",
    "long": "Hund" * 2500,                                                     # 10,000 characters, one word
    # emoji, right-to-left, combining mark, control characters. (Lone surrogates cannot reach a page:
    # a browser sends UTF-8; the engine's property tests cover them.)
    "scripts": "Ein Hund 🙂 مرحبا 你好 e\u0301 a\x00b\x07c\u202e",
    "markup": "<script>alert(1)</script> <i>x</i> **fett** [link](http://evil.example) ![b](http://evil.example/a.png)",
}


@pytest.mark.skipif(not HAS_TRANSLATE, reason="translate checkpoints not committed")
@pytest.mark.parametrize("page,query", PAGES, ids=[f"{p.split('/')[1][:-3]}-{q.get('task', '')}" for p, q in PAGES])
def test_hostile_inputs_on_every_page(page, query):
    for name, text in INPUTS.items():
        at = open_page(page, {**query, "text": text})
        for tab in tabs_of(page):
            if tab is not None:       # the Translate and Reverse pages draw only the open tab: each in turn
                open_tab(at, f"{page_task(page)}.tab", tab)
            assert not at.exception, (page, name, tab, at.exception)
            shown = " ".join(m.value for m in at.markdown)
            for fragment in ("<script>", "<i>", "http://evil.example", "**fett**"):
                assert fragment not in shown, (page, name, tab, fragment)
            for fig in plotly_figures(at):
                dumped = json.dumps(fig)
                assert "<script>" not in dumped and "<i>" not in dumped, (page, name, tab)
            if name == "blank":
                assert messages(at), (page, "blank input needs a message")
            else:  # something was shown: an output or a message
                assert at.code or messages(at) or elements(at.main, "arrow_data_frame"), (page, name, tab)


def page_task(page: str) -> str:
    return page.split("/")[1][:-3]


def tabs_of(page: str) -> list:
    from app_support.inspector import tab_names

    return tab_names(page_task(page)) if page_task(page) in ("translate", "reverse") else [None]
