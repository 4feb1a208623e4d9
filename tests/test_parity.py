"""The fast CPU inference path (Seq2Seq.inference: oneDNN packed matmuls, the masked GRU
encoder, the bf16-scored exact argmax) against PyTorch's standard ops (the plain path:
the same calls outside inference()).

Tolerances: encoder outputs and decoder states 1e-4 absolute (float32 products summed in
another order, about 1e-7 relative per matmul, compounded over steps: translate-bahdanau's
states differ by at most 4e-6 over 6 steps, but translate-luong's unscaled dot-product
scores turn that into up to 8e-5 in its fed-back attentional state, amplified step after
step by the input feeding); logits 5e-4 absolute (luong: up to 1.6e-4); chosen ids exactly
equal, here and on every sentence of test 2016; validation loss (on a third of the
validation pairs) within 1e-4."""
import pytest
import torch

from seq2seq.checkpoint import list_checkpoints, load_checkpoint
from seq2seq.data import collate, tokenized_multi30k
from seq2seq.decoding import greedy_decode
from seq2seq.evaluate import decode_corpus, teacher_forced_loss
from seq2seq.models.output import OutputLayer, cpu_has_native_bf16
from seq2seq.task_data import PairDataset
from seq2seq.vocab import EOS_ID

from conftest import MULTI30K_DIR, ROOT, padded_batch, tiny_model

STATE_TOL, LOGIT_TOL, LOSS_TOL = 1e-4, 5e-4, 1e-4
STEPS = 6
FAST_ROWS = OutputLayer.FAST_MIN_ROWS            # the bf16 argmax runs from this many rows
SHIPPED = list_checkpoints(ROOT / "checkpoints")
SHIPPED_TRANSLATE = [p for p in SHIPPED if p.name.startswith("translate-")]


def run_steps(model, src, lens, steps=STEPS):
    """Encoder outputs, then per step: decoder state, logits and the greedy id (tokens-only
    argmax), feeding the argmax; on whichever path the caller is in."""
    outputs, _ = model.encoder(src, lens)
    memory, state = model.encode(src, lens)
    prev = torch.full((src.size(0),), 2)
    trace = []
    for _ in range(steps):
        logits, new_state, attn = model.decode_step(prev, state, memory)
        chosen, _, _ = model.decode_step_argmax(prev, state, memory, (0, 2))
        trace.append((new_state, logits, chosen, attn))
        state, prev = new_state, chosen
    return outputs, trace


def assert_paths_match(model, src, lens):
    with torch.inference_mode():
        plain = run_steps(model, src, lens)
    with model.inference():
        assert model.in_inference
        fast = run_steps(model, src, lens)
    assert torch.allclose(fast[0], plain[0], atol=STATE_TOL), (fast[0] - plain[0]).abs().max()
    for (fs, fl, fc, fa), (ps, pl, pc, pa) in zip(fast[1], plain[1]):
        for k in ps:
            assert torch.allclose(fs[k], ps[k], atol=STATE_TOL), (k, (fs[k] - ps[k]).abs().max())
        assert torch.allclose(fl, pl, atol=LOGIT_TOL), (fl - pl).abs().max()
        assert torch.equal(fc, pc)                 # the same ids, bf16-scored or not
        if pa is not None:
            assert torch.allclose(fa, pa, atol=STATE_TOL)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("rows", [5, FAST_ROWS + 6])       # below and above the bf16-argmax threshold
def test_fast_inference_matches_the_plain_path(arch, tied, rows):
    # a vocabulary large enough for the two-stage bf16 argmax (more than 3 blocks of 128)
    model = tiny_model(arch, seed=7, tgt_vocab=700, hidden_dim=32, emb_dim=32, tie_embeddings=tied,
                       n_layers=2 if arch == "lstm" else 1)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.0)                             # peaked logits: near-ties are real
    lengths = [1 + (i * 7) % 13 for i in range(rows)]
    src, lens = padded_batch(lengths, seed=rows)
    assert_paths_match(model, src, lens)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_fast_inference_matches_the_plain_path_on_every_shipped_checkpoint(path):
    ck = load_checkpoint(path)
    if ck.task == "translate":
        texts = [["ein", "mann", "fährt", "mit", "dem", "fahrrad", "."], ["zwei", "hunde", "spielen", "im", "schnee", "."],
                 ["eine", "frau", "mit", "einem", "roten", "hut", "liest", "ein", "buch", "."]]
    else:
        texts = [list("attention is all you need"), list("hello world"), list("abc 123")]
    rows = FAST_ROWS + 4                           # enough rows for the bf16 argmax
    ids = [ck.src_vocab.encode(texts[i % len(texts)][: 1 + i % 12]) for i in range(rows)]
    batch = collate(ids, [[] for _ in ids], list(range(rows)))
    assert_paths_match(ck.model, batch.src, batch.src_lens)


def test_the_bf16_argmax_really_runs_inside_inference_mode(monkeypatch):
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: the exact float32 argmax is the only path")
    model = tiny_model("bahdanau", seed=1, tgt_vocab=700)
    calls = []
    real = OutputLayer._bf16_weight
    monkeypatch.setattr(OutputLayer, "_bf16_weight", lambda self, w: calls.append(1) or real(self, w))
    src, lens = padded_batch([4] * FAST_ROWS, seed=2)
    greedy_decode(model, src, lens, details=False)
    assert not calls                               # plain path: float32 only
    with model.inference():
        greedy_decode(model, src, lens, details=False)
    assert calls


@pytest.fixture(scope="module")
def multi30k(multi30k_token_cache):
    return tokenized_multi30k(MULTI30K_DIR, multi30k_token_cache)


@pytest.mark.parametrize("path", SHIPPED_TRANSLATE, ids=lambda p: p.name)
def test_greedy_ids_on_all_of_test_2016_are_the_same_on_both_paths(path, multi30k):
    ck = load_checkpoint(path)
    sources = [ck.src_vocab.encode(s[: ck.model.cfg.max_src_len]) for s in multi30k["test2016"]["de"]]
    fast = decode_corpus(ck.model, sources, "cpu", beam=1)             # inference mode, bf16 argmax
    plain = [None] * len(sources)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), 128):                             # standard ops, float32 argmax
        idx = order[start:start + 128]
        b = collate([sources[i] for i in idx], [[] for _ in idx], idx)
        for i, h in zip(idx, greedy_decode(ck.model, b.src, b.src_lens, details=False)):
            plain[i] = h.tokens
    differing = [i for i in range(len(sources)) if fast[i] != plain[i]]
    assert not differing, f"{path.name}: test 2016 sentences {differing[:20]} differ between the paths"


@pytest.mark.parametrize("path", SHIPPED_TRANSLATE, ids=lambda p: p.name)
def test_validation_loss_on_the_fast_path_equals_the_autograd_path(path, multi30k):
    ck = load_checkpoint(path)
    # every third validation pair (338 of 1014, all lengths): the autograd pass of the plain
    # loop over all of them cost the 2-core suite 40 s, and a third already has every length
    val = {side: multi30k["val"][side][::3] for side in ("de", "en")}
    ds = PairDataset([ck.src_vocab.encode(s) for s in val["de"]], [ck.tgt_vocab.encode(t) for t in val["en"]])
    fast = teacher_forced_loss(ck.model, ds, torch.device("cpu"))
    total, tokens = 0.0, 0
    for b in ds.batches(256):                        # the plain step loop, autograd recording
        loss, n = ck.model.loss(b.src, b.src_lens, b.tgt, fast=False)
        assert loss.requires_grad
        total, tokens = total + loss.item() * n, tokens + n
    assert abs(fast - total / tokens) <= LOSS_TOL, (fast, total / tokens)


def test_eos_boosted_models_still_agree_on_lengths():
    model = tiny_model("luong", seed=3, tgt_vocab=500)
    with torch.no_grad():
        model.decoder.out.proj.bias[EOS_ID] += 1.0
    src, lens = padded_batch([1 + i % 9 for i in range(FAST_ROWS + 3)], seed=9)
    plain = greedy_decode(model, src, lens, details=False)
    with model.inference():
        fast = greedy_decode(model, src, lens, details=False)
    assert [h.step_tokens for h in fast] == [h.step_tokens for h in plain]
