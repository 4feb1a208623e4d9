"""Property tests: arbitrary Unicode through tokenize -> encode -> translate.

Whatever a person pastes (control characters, emoji, right-to-left scripts, combining
marks, lone surrogates, HTML, Markdown, 10,000-character words), the engine answers with
a result or the project's own InputError with a message, never another exception.

Reproducible in CI: derandomized, no example database. About 600 generated examples in all
(fewer through the two models, whose decoding costs a quarter of a second each on one
thread), plus the hand-picked nasty ones for every path."""
import json
import time

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seq2seq.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from seq2seq.errors import InputError
from seq2seq.text import MAX_WORD_CHARS, TOKENIZERS, tokenize
from seq2seq.translate import Translator
from seq2seq.vocab import SPECIALS, Vocab

from conftest import ROOT, tiny_model

MAX_CHARS = 10_000

# Pieces a person might paste. Hypothesis glues some together and may repeat them up to
# MAX_CHARS characters (repetition, rather than drawing 10,000 characters one by one,
# keeps generation fast and within Hypothesis' data budget).
SNIPPETS = [
    "Ein Mann fährt mit dem Fahrrad die Straße entlang.",
    "👩‍👩‍👧‍👦🏳️‍🌈👍🏽", "\U0001F600\uFE0F\u200D", "שלום עולם", "مرحبا بالعالم", "\u202Eevil\u202C", "\u200F\u200E",
    "e\u0301\u0302\u0303\u0304", "Z\u0351\u0352\u0353\u0354\u0355a\u0356\u0357l\u0358\u0359go",
    "<script>alert('x')</script>", "<b>fett</b>&nbsp;&amp;&#x27;", "<!-- -->",
    "# Titel\n\n* eins\n* **zwei**\n\n```py\nx = 1\n```\n> Zitat | a | b |\n|---|---|",
    "[link](http://example.com/a_(b)?c=d&e=f)", "\x00\x01\x07\x1b[31m\x7f\x85\x9f", "\r\n\t\v\f",
    "\u2028\u2029\u00a0\u3000\ufeff", "\ud800", "\udfff\ud83d", "İıß\u0130ǅﬃ", "((((", "''''", "...",
    "Donaudampfschifffahrtsgesellschaftskapitän", "\U0010FFFF\uFFFE\uFFFF", "０１２ＡＢＣ", "日本語のテキスト",
]
CHARS_ANY = st.characters(exclude_categories=())          # every code point, lone surrogates too
SEGMENT = st.one_of(
    st.sampled_from(SNIPPETS),
    st.text(CHARS_ANY, max_size=40),
    st.text(st.characters(categories=["Mn", "Me", "Mc"]), max_size=12),           # combining marks
    st.text(st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp", "Zs"]), max_size=12),
    st.text(st.characters(min_codepoint=0x0590, max_codepoint=0x08FF), max_size=20),   # Hebrew, Arabic, ...
    st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=10),  # emoji
    st.builds(lambda c, n: c * n, CHARS_ANY, st.integers(50, MAX_CHARS)),       # one very long "word"
)
TEXT = st.builds(lambda parts, times: ("".join(parts) * times)[:MAX_CHARS],
                 st.lists(SEGMENT, max_size=6), st.sampled_from([1, 1, 1, 3, 40, MAX_CHARS]))
NASTY = ["", " \t\n ", "\x00" * 50, "\ud800" * 3, "(" * MAX_CHARS, "'" * MAX_CHARS, "x" * MAX_CHARS,
         "😀" * MAX_CHARS, "e" + "\u0301" * (MAX_CHARS - 1), ("<div>" + "a" * 200 + "</div>") * 40]


def with_examples(*kwargs: dict):
    def deco(fn):
        for kw in kwargs:
            fn = example(**kw)(fn)
        return fn
    return deco


def fixed(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two busy cores: one thread per test process is faster and kinder."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_translation_checkpoint(path):
    """A translate-like checkpoint (spaCy tokenizers, word vocabularies), untrained."""
    src = Vocab([*SPECIALS, *"ein mann fährt mit dem fahrrad die straße entlang . , zwei hunde".split()])
    tgt = Vocab([*SPECIALS, *"a man rides his bike down the street . , two dogs".split()])
    model = tiny_model("bahdanau", src_vocab=len(src), tgt_vocab=len(tgt), max_src_len=100, max_out_len=40)
    card = {"name": "translate-tiny", "task": "translate", "metrics": {}, "history": [],
            "teacher_forcing": {"kind": "constant", "ratio": 1.0},
            "tokenizers": {"src": "spacy:de", "tgt": "spacy:en"},
            "provenance": {"device": "cpu", "device_name": "test", "torch_version": torch.__version__,
                           "git_commit": "x", "trained_at": "now", "wall_seconds": 0, "seed": 0, "data": "test"}}
    save_checkpoint(path, model, src, tgt, card)
    return path


@pytest.fixture(scope="module")
def translation(tmp_path_factory):
    """The shipped translate-bahdanau (else another shipped translation model, else a tiny one)."""
    shipped = sorted(list_checkpoints(ROOT / "checkpoints", "translate"), key=lambda p: p.name != "translate-bahdanau")
    path = shipped[0] if shipped else _tiny_translation_checkpoint(tmp_path_factory.mktemp("ck") / "translate-tiny")
    return Translator(load_checkpoint(path))


@pytest.fixture(scope="module")
def reversal():
    return Translator(load_checkpoint(ROOT / "checkpoints" / "reverse-bahdanau"))


def check_translation(tr: Translator, text: str, beam: int = 1, prefix: str | None = None) -> None:
    """A Translation that holds together, or InputError exactly when nothing is left to read."""
    readable = bool(tokenize(text, tr.src_tokenizer))
    try:
        res = tr.translate(text, beam=beam, prefix=prefix)
    except InputError as e:
        assert not readable, f"InputError for readable text: {e}"
        assert str(e).strip() and "\n" not in str(e)
        return
    assert readable
    src = res.source
    assert 1 <= len(src.tokens) <= tr.cfg.max_src_len and len(src.ids) == len(src.tokens)
    assert src.truncated == (src.n_tokens > tr.cfg.max_src_len)
    assert len(res.output_tokens) <= tr.cfg.max_out_len
    assert res.alignment.shape == (len(res.output_tokens), len(src.tokens))
    assert torch.isfinite(torch.as_tensor(res.alignment)).all()
    # what the command line prints must encode: no lone surrogates survive
    res.text.encode("utf-8")
    json.dumps(res.to_json(), ensure_ascii=False).encode("utf-8")


@fixed(350)
@given(text=TEXT)
@with_examples(*({"text": t} for t in NASTY))
def test_tokenizers_take_any_text(text):
    for kind in TOKENIZERS:
        tokens = tokenize(text, kind)
        assert all(isinstance(t, str) and t for t in tokens)
        "".join(tokens).encode("utf-8")
        if kind != "chars":
            assert all(t.strip() for t in tokens)
        ids = Vocab([*SPECIALS, "a", "b"]).encode(tokens)
        assert len(ids) == len(tokens)


@fixed(120)
@given(text=TEXT, beam=st.sampled_from([1, 1, 1, 2]), prefix=st.one_of(st.none(), TEXT))
@with_examples(*({"text": t, "beam": 1, "prefix": None} for t in NASTY),
               {"text": "Ein Hund.", "beam": 2, "prefix": "(" * MAX_CHARS})
def test_translation_path_takes_any_text(translation, text, beam, prefix):
    check_translation(translation, text, beam, prefix)


@fixed(120)
@given(text=TEXT, beam=st.sampled_from([1, 1, 1, 3]))
@with_examples(*({"text": t, "beam": 1} for t in NASTY))
def test_reversal_path_takes_any_text(reversal, text, beam):
    check_translation(reversal, text, beam)


def test_non_text_is_an_input_error(reversal):
    for bad in (None, 42, b"bytes", ["a"]):
        with pytest.raises(InputError):
            reversal.translate(bad)


def test_long_runs_without_spaces_tokenize_fast():
    """spaCy's affix loop is quadratic in a word's length ("(" * 9000 took 12 s): runs
    longer than MAX_WORD_CHARS are cut first, and shorter words are left alone."""
    for kind in ("spacy:de", "spacy:en"):
        tokenize("warm up", kind)
        for text in ("(" * MAX_CHARS, "'" * MAX_CHARS, '("[' * (MAX_CHARS // 3), "x." * (MAX_CHARS // 2)):
            t0 = time.process_time()
            tokenize(text, kind)
            assert time.process_time() - t0 < 1.0, (kind, text[:10])
        word = "a" * MAX_WORD_CHARS
        assert tokenize(f"{word} b", kind) == [word, "b"]
        assert tokenize(word + "c", kind) == [word, "c"]
