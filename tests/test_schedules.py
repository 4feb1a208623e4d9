import math

import pytest

from seq2seq.config import TeacherForcingConfig as TF
from seq2seq.schedules import teacher_forcing_ratio as r


def test_constant():
    assert r(TF("constant", ratio=0.25), 0) == 0.25
    assert r(TF("constant", ratio=0.25), 10_000) == 0.25


def test_linear_decay_with_floor():
    cfg = TF("linear", k=1.0, c=0.001, eps_min=0.2)
    assert r(cfg, 0) == 1.0
    assert r(cfg, 500) == pytest.approx(0.5)
    assert r(cfg, 800) == pytest.approx(0.2)
    assert r(cfg, 10_000) == 0.2


def test_exponential_decay():
    cfg = TF("exponential", k=0.99)
    assert r(cfg, 0) == 1.0
    assert r(cfg, 100) == pytest.approx(0.99 ** 100)


def test_inverse_sigmoid_decay():
    cfg = TF("inverse_sigmoid", k=100.0)
    assert r(cfg, 0) == pytest.approx(100 / 101)
    assert r(cfg, 460) == pytest.approx(100 / (100 + math.exp(4.6)))
    assert r(cfg, 10 ** 9) == 0.0  # no overflow


def test_unknown_kind():
    with pytest.raises(ValueError):
        r(TF("cosine"), 0)
