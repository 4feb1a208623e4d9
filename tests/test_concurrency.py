"""One cached model serves many sessions at once: concurrent outputs equal sequential ones."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from seq2seq.translate import Translator

from conftest import ROOT

TEXTS = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest ein Buch.",
         "Kinder spielen Fußball.", "Ein kleines Mädchen isst ein Eis.", "Der Hund schläft."]


def _run(tr, text, beam):
    r = tr.translate(text, beam=beam)
    return r.text, r.alignment, r.log_prob


def test_concurrent_translations_equal_sequential_ones():
    models = [Translator.load(ROOT / "checkpoints" / name) for name in ("translate-bahdanau", "translate-gru",
                                                                           "reverse-bahdanau")]
    jobs = [(tr, text, beam) for tr in models for text in TEXTS for beam in (1, 3)]
    sequential = [_run(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:     # the app's sessions are threads of one process
        concurrent = list(pool.map(lambda job: _run(*job), jobs))
    for (t1, a1, l1), (t2, a2, l2) in zip(sequential, concurrent):
        assert t1 == t2 and abs(l1 - l2) < 1e-4
        assert np.allclose(a1, a2, atol=1e-5)
    assert all(p.grad is None for tr in models for p in tr.model.parameters())
