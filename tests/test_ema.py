"""The weights' moving average: the update rule, checkpoint state, and the swap used for validation."""
import numpy as np
import pytest
from mindspore import Tensor

from src.config import load_config
from src.ema import EMA
from src.ipt import IPT


@pytest.fixture(scope="module")
def model():
    return IPT(load_config("ipt_tiny", {"tasks": ["sr_x2"]}))


def test_decay_warms_up_then_stays_at_the_set_value(model):
    ema = EMA(model, 0.999)
    assert ema.decay_at(1) == pytest.approx(2 / 11)
    assert ema.decay_at(100) == pytest.approx(101 / 110)
    assert [ema.decay_at(n) for n in (10_000, 100_000)] == [0.999, 0.999]


def test_update_is_the_float32_moving_average_and_swap_restores_exactly(model):
    ema = EMA(model, 0.9)
    params = list(model.trainable_params())
    w0 = [p.asnumpy().copy() for p in params]
    rng = np.random.default_rng(0)
    w1 = [(w + rng.standard_normal(w.shape)).astype(np.float32) for w in w0]
    for p, w in zip(params, w1):
        p.set_data(Tensor(w))
    ema.update(1000)  # past the warm-up: decay 0.9
    state = ema.state()
    for p, a, b in zip(params, w0, w1):
        expected = a * np.float32(0.9) + b * np.float32(1.0 - 0.9)
        np.testing.assert_allclose(state["ema." + p.name].asnumpy(), expected, rtol=1e-6, atol=1e-6)
    with ema.swapped_in():
        for p in params:
            np.testing.assert_array_equal(p.asnumpy(), state["ema." + p.name].asnumpy())
    for p, w in zip(params, w1):  # the model's own weights are back, bit for bit
        np.testing.assert_array_equal(p.asnumpy(), w)
    averaged = ema.averaged_params(model)
    assert set(averaged) == {p.name for p in model.get_parameters()}


def test_state_round_trip_and_missing_state(model):
    a, b = EMA(model, 0.99), EMA(model, 0.99)
    for p in a.shadow:
        p.set_data(Tensor(p.asnumpy() + 1))
    b.load_state(a.state(), "a.ckpt")
    for pa, pb in zip(a.shadow, b.shadow):
        np.testing.assert_array_equal(pa.asnumpy(), pb.asnumpy())
    with pytest.raises(ValueError, match="not trained with --ema_decay"):
        b.load_state({}, "old.ckpt")
    with pytest.raises(ValueError, match="ema_decay"):
        EMA(model, 1.0)
