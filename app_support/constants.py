"""The app's shared constants, defined once: tasks and their labels, the page list (used by
the navigation and by the Home page's links), the Plotly chart config, and which model a
page opens on. Every view imports these from here, never from another view.

No Streamlit, torch or Plotly here: the page scripts import this before the heavy imports."""
from __future__ import annotations

from typing import NamedTuple

from seq2seq.presets import TASKS  # noqa: F401 - re-exported: the app's tasks are the engine's

APP_TITLE = "attention-lab"
# Streamlit's Material icons (a font Streamlit serves itself): emoji render as empty boxes
# where the machine has no emoji font.
APP_ICON = ":material/search:"

TASK_LABELS = {"translate": "German → English", "reverse": "reverse a sequence"}
ARCH_LABELS = {"lstm": "LSTM (Sutskever)", "gru": "GRU (Cho)", "bahdanau": "GRU + Bahdanau attention",
               "luong": "GRU + Luong attention"}
INPUT_LABELS = {"translate": "German sentence", "reverse": "Sequence to reverse (letters, digits, spaces)"}
EXAMPLES = {
    "translate": ["Ein Mann fährt mit dem Fahrrad die Straße entlang.",
                  "Zwei Hunde spielen im Schnee.",
                  "Eine Frau mit einem roten Hut liest ein Buch im Park.",
                  "Kinder spielen Fußball auf einer grünen Wiese.",
                  "Ein kleines Mädchen isst ein Eis vor einem Geschäft.",
                  "Der Mann und die Frau tanzen auf der Straße, und der Hund schaut zu."],
    "reverse": ["hello world", "attention is all you need", "abc 123", "seq2seq models", "the quick brown fox"],
}


class Page(NamedTuple):
    path: str       # the page script, relative to app.py (what st.Page and st.page_link take)
    title: str      # the navigation entry and the Home page's link label
    icon: str       # a Streamlit Material icon
    summary: str    # what the Home page says you see there ("" for Home itself)

    @property
    def url_path(self) -> str:
        """The page's URL path as Streamlit derives it from the file name ("" for the default page)."""
        return "" if self.path == PAGES[0].path else self.path.rsplit("/", 1)[-1].removesuffix(".py")


PAGES: tuple[Page, ...] = (  # the first one is the default page
    Page("pages/home.py", "Home", ":material/home:", ""),
    Page("pages/translate.py", "Translate", ":material/translate:",
         "German → English: the translation, where the decoder looked for every word, and the candidates it "
         "weighed at each step."),
    Page("pages/reverse.py", "Reverse", ":material/swap_horiz:",
         "The classic toy task: write the input backwards. Perfect attention is an anti-diagonal."),
    Page("pages/compare.py", "Compare models", ":material/compare:",
         "One input through every model side by side, with the metrics beside the tutorial's reference numbers."),
    Page("pages/teacher_forcing.py", "Teacher forcing", ":material/school:",
         "Feeding the decoder the right previous word in training, or its own guess: the schedules between the "
         "two, what a sweep over them found, and a small model to train yourself."),
    Page("pages/beam_search.py", "Beam search", ":material/account_tree:",
         "Every hypothesis beam search keeps at each step, with its score, and the one that wins."),
    Page("pages/test_set.py", "Test set", ":material/table_chart:",
         "Every translation model over all of test 2016: sentence BLEU and what the attention did, per sentence, "
         "with the worst sentences one click from the Translate page."),
)

# st.plotly_chart(config=...): no Plotly logo, the toolbar shown, PNG export at twice the size.
PLOTLY_CONFIG = {"displaylogo": False, "displayModeBar": True,
                 "toImageButtonOptions": {"format": "png", "scale": 2, "filename": "attention-lab"}}

# Which shipped model a page opens on: attention first (it has something to show), then the rest.
BLEU_FORMAT = "%.2f"     # tables show BLEU to the digits the cards record: 39.95 must not read as 40.0
PREFERRED_ARCHS = ("bahdanau", "luong", "gru", "lstm")


def default_model(names: list[str], tasks: tuple[str, ...] = TASKS) -> str:
    """The model a page opens on: `<task>-<arch>` for the first task, then the first preferred
    architecture, that is among `names`; else the first name. `names` must not be empty."""
    for task in tasks:
        for arch in PREFERRED_ARCHS:
            if f"{task}-{arch}" in names:
                return f"{task}-{arch}"
    return names[0]
