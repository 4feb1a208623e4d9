"""Every preset in one place: the architectures, model sizes per task and use (shipped,
sweep, the app's live lab), seeds, and where the data lives by default.

Commands and the app read these; nothing else holds a copy."""
from __future__ import annotations

ARCHS = ("lstm", "gru", "bahdanau", "luong")
ATTENTION_ARCHS = ("bahdanau", "luong")
TASKS = ("translate", "reverse")

DATA_DIR = "../shared/data/multi30k"       # the Multi30k release files (--data-dir default)
TOKEN_CACHE = "cache/multi30k-tokens.json.gz"

# Seeds. Training, validation and evaluation data never share a seed.
TRAIN_SEED = 1234                 # --seed default
REVERSE_VAL_SEED_OFFSET = 555_555  # validation sequences: seed + this
EVAL_SEED = 987654                # fresh sequences for exact match by length (cards, sweeps, lab)
SWEEP_SEEDS = (1, 2, 3)

# Model sizes used when an option is not given on the training command line.
MODEL_SIZES = {
    "translate": dict(emb_dim=256, hidden_dim=512, dropout=0.3, attn_dim=256, max_src_len=100, max_out_len=100),
    "reverse": dict(emb_dim=32, hidden_dim=128, dropout=0.0, attn_dim=64, max_src_len=60, max_out_len=80),
}
DEFAULT_LAYERS = {"lstm": 2}      # other architectures: 1

# The shipped checkpoints' sizes (scripts/train_cpu.sh passes these).
SHIPPED_SIZES = {
    "translate": dict(emb_dim=128, hidden_dim=256, attn_dim=128, dropout=0.3, tie_embeddings=True),
    "reverse": dict(emb_dim=32, hidden_dim=128, attn_dim=64, dropout=0.0),
}

# The teacher-forcing sweeps at full size: the shipped models' sizes (SHIPPED_SIZES and the
# layers scripts/train_cpu.sh gives them), the same number of updates for every run (a
# fixed number of epochs, no early stopping). The reduced CPU form changes only size options.
SWEEP_SIZES = {
    "reverse": dict(archs=("gru", "bahdanau"), constants=(0.0, 0.25, 0.5, 0.75, 1.0),
                    decays=("linear", "exponential", "inverse_sigmoid"), tutorials_rule=True, seeds=3,
                    extra_seeds=0, epochs=10, train_size=40000, max_len=40, emb=32, hidden=128, attn_dim=64,
                    layers=(("gru", 2),), dropout=0.0, tie=False, label_smoothing=0.0,
                    batch_size=128, lr=3e-3, val_size=1000, eval_n=200, keep="first-seed"),
    "translate": dict(archs=("bahdanau",), constants=(0.0, 0.5, 0.75, 1.0), decays=("linear", "inverse_sigmoid"),
                      tutorials_rule=True, seeds=1, extra_seeds=2, epochs=20, train_size=None, max_len=None,
                      emb=128, hidden=256, attn_dim=128, layers=(), dropout=0.3, tie=True, label_smoothing=0.1,
                      batch_size=128, lr=1e-3, val_size=None, eval_n=None, keep="all"),
}
# translate: `extra_seeds` more seeds for constant 1 and for the best scheduled policy,
# chosen after the first pass (sweep.best_scheduled), so the seed spread can be read.

# The Teacher forcing page's live lab: sizes that train in seconds on two CPU cores.
LAB_MODEL = dict(emb_dim=16, hidden_dim=48, attn_dim=32, dropout=0.0, max_src_len=20, max_out_len=30)
LAB_TRAINING = dict(batch_size=32, lr=5e-3, val_size=200, eval_n=40)


def default_layers(arch: str) -> int:
    return DEFAULT_LAYERS.get(arch, 1)
