import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.config import ARCHS, ModelConfig  # noqa: E402
from seq2seq.checkpoint import save_checkpoint  # noqa: E402
from seq2seq.models import build_model  # noqa: E402
from seq2seq.vocab import SPECIALS, Vocab  # noqa: E402

MULTI30K_DIR = Path(os.environ.get("MULTI30K_DIR", ROOT.parent / "shared" / "data" / "multi30k"))

# Under pytest-xdist (scripts/test.sh) each worker gets its share of the cores, 1 thread each
# on 2 cores, and so do the commands it starts, so the workers do not oversubscribe the machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(THREADS)
if _WORKERS > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(THREADS))

# The slowest modules first (as measured on 2 cores). scripts/test.sh runs the suite on one
# worker per core, each taking the next whole module in this order (--dist loadfile
# --no-loadscope-reorder): starting with the long ones lets the workers finish together
# instead of one working through a long module while the others idle.
SLOW_MODULES_FIRST = ("test_train", "test_pages_bad_input", "test_soup", "test_properties", "test_browser", "test_faults",
                      "test_bench", "test_snapshots", "test_page_training", "test_parity", "test_translate_task",
                      "test_page_inspect", "test_cli", "test_cli_errors", "test_beam_knobs", "test_ddp", "test_sweep",
                      "test_page_attribution", "test_page_step", "test_attribution", "test_page_beam")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))      # stable: a module keeps its order


def tiny_config(arch: str, src_vocab: int = 23, tgt_vocab: int = 19, **kw) -> ModelConfig:
    base = dict(arch=arch, src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, emb_dim=8, hidden_dim=16,
                n_layers=2 if arch == "lstm" else 1, dropout=0.0, attn_dim=12, max_src_len=30, max_out_len=12)
    base.update(kw)
    return ModelConfig(**base)


def tiny_model(arch: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(tiny_config(arch, **kw)).eval()


# ------------------------------------------------------------------ shared builders
def _card(name):
    """The descriptive fields of a minimal reversal card."""
    return {"name": name, "task": "reverse", "teacher_forcing": {"kind": "constant", "ratio": 1.0},
            "metrics": {}, "history": [], "tokenizers": {"src": "chars", "tgt": "chars"},
            "provenance": {"device": "cpu", "device_name": "test", "torch_version": torch.__version__,
                           "git_commit": "x", "trained_at": "now", "wall_seconds": 0, "seed": 0, "data": "test"}}


def _vocabs(model):
    """Numbered vocabularies of the model's sizes."""
    src = Vocab([*SPECIALS, *[f"s{i}" for i in range(model.cfg.src_vocab_size - 4)]])
    tgt = Vocab([*SPECIALS, *[f"t{i}" for i in range(model.cfg.tgt_vocab_size - 4)]])
    return src, tgt


def save_tiny(path, arch="bahdanau", half=False, seed=0, **kw):
    model = tiny_model(arch, seed=seed, **kw)
    save_checkpoint(path, model, *_vocabs(model), _card(Path(path).name), half=half)
    return model


@pytest.fixture
def single_thread():
    """One torch thread for the test (repeatable float sums across runs), the count before
    restored after, whatever the test's outcome."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


def padded_batch(lengths, vocab=23, seed=0):
    """src [B, S] with ids >= 4 (no specials), padded with 0, and lengths."""
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    src = torch.zeros(len(lengths), S, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab, (n,), generator=g)
    return src, torch.tensor(lengths)


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory):
    """A checkpoint folder for page tests (a real reversal model, tiny random ones, broken
    ones), made the app's checkpoint root for the module."""
    from apptest_util import build_lab_checkpoints

    root = build_lab_checkpoints(tmp_path_factory.mktemp("checkpoints"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTENTION_LAB_CHECKPOINTS", str(root))
        yield root


def training_batch(seed=0, vocab=19):
    """src, lens, tgt of a small training batch: targets of three lengths (<sos> first,
    then <eos> and padding in two rows)."""
    src, lens = padded_batch([7, 3, 5, 7, 1, 6], seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    tgt = torch.randint(4, vocab, (6, 9), generator=g)
    tgt[:, 0] = 2                       # <sos>
    tgt[2, 5], tgt[2, 6:] = 3, 0        # one shorter target: <eos>, then padding
    tgt[4, 3], tgt[4, 4:] = 3, 0
    return src, lens, tgt


@pytest.fixture(scope="session")
def multi30k_token_cache(tmp_path_factory):
    """A token cache of the Multi30k release: the checkout's cache/ when there, else
    tokenized once per test process (spaCy takes ~15 s over the release)."""
    if not MULTI30K_DIR.is_dir():
        pytest.skip("needs Multi30k (../shared/data/multi30k or $MULTI30K_DIR)")
    from seq2seq.data import tokenized_multi30k

    checkout = ROOT / "cache" / "multi30k-tokens.json.gz"
    if checkout.is_file():
        return checkout
    path = tmp_path_factory.mktemp("tokens") / "multi30k-tokens.json.gz"
    tokenized_multi30k(MULTI30K_DIR, path)
    return path
