"""Exposure bias on one input: the probability of each reference token, teacher-forced
(gold prefix) and free-running (the model's own prefix)."""
import math

from test_page_teacher_forcing import REVERSE_CK, CountingModel

from seq2seq.exposure import replay, replay_rows, replay_text
from seq2seq.translate import Translator

ITOS = ["<pad>", "<unk>", "<sos>", "<eos>"] + [str(i) for i in range(4, 12)]
HIGH = math.exp(10) / (math.exp(10) + 11)       # the counting model's one-hot logits of 10, 12 ids
LOW = 1 / (math.exp(10) + 11)


def test_free_running_gold_probabilities_follow_the_models_own_prefix():
    r = replay(CountingModel(), [4, 4], [5, 6, 7, 9], ITOS)
    # fed <sos>, 5, 6, 7, 8 (its own): it believes gold 5, 6, 7, then not gold 9 (it writes 8),
    # then not <eos> (fed its own 8 it writes 9)
    assert [round(p, 6) for p in r.free_gold_prob] == [round(p, 6) for p in (HIGH, HIGH, HIGH, LOW, LOW)]
    # teacher-forced, fed the gold 9 at step 4, it does give <eos> its mass
    assert [round(p, 6) for p in r.forced_gold_prob] == [round(p, 6) for p in (HIGH, HIGH, HIGH, LOW, HIGH)]
    rows = replay_rows(r)
    assert [row["p(gold | own prefix)"] for row in rows[:5]] == [round(p, 4) for p in (HIGH, HIGH, HIGH, LOW, LOW)]
    assert rows[5]["p(gold | own prefix)"] is None               # past the gold length


def test_with_a_real_model_the_two_agree_until_the_divergence():
    tr = Translator.load(REVERSE_CK)
    _, r = replay_text(tr, "hello world")
    end = len(r.free_gold_prob) if r.divergence is None else r.divergence + 1
    # same prefix up to and including the first divergent step: same distribution
    assert all(abs(a - b) < 1e-5 for a, b in zip(r.free_gold_prob[:end], r.forced_gold_prob[:end]))
    assert len(r.free_gold_prob) == min(len(r.gold), len(r.free))
