"""src/conv.py: the im2col formulation computes what MindSpore's Conv2D computes, forward and backward."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from src import conv as conv_module
from src.config import load_config
from src.conv import IM2COL, NATIVE, Conv2d, set_formulation
from src.ipt import IPT


def _built(name, factory):
    """Build with formulation `name`, then restore the process's own decision."""
    saved = conv_module._current
    set_formulation(name)
    try:
        return factory()
    finally:
        set_formulation(saved)


class _Loss(nn.Cell):
    def __init__(self, net, target):
        super().__init__()
        self.net, self.target = net, target

    def construct(self, x):
        return ((self.net(x) - self.target) ** 2).sum()


@pytest.mark.parametrize("batch,cin,cout,k,layout", [(2, 3, 8, 3, "input"), (2, 8, 8, 5, "rows"),
                                                     (1, 8, 32, 3, "input"), (2, 4, 4, 1, "input"),
                                                     (2, 64, 3, 3, "output"), (1, 64, 2, 5, "output")])
def test_im2col_equals_native_forward_and_gradients(batch, cin, cout, k, layout):
    rng = np.random.default_rng(k * 100 + cout)
    native = _built(NATIVE, lambda: Conv2d(cin, cout, k))
    im2col = _built(IM2COL, lambda: Conv2d(cin, cout, k))
    assert not native.im2col and im2col.im2col and im2col.layout == layout
    assert [p.name for p in native.get_parameters()] == [p.name for p in im2col.get_parameters()]
    weight = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.2
    bias = rng.standard_normal(cout).astype(np.float32)
    for cell in (native, im2col):
        cell.weight.set_data(Tensor(weight))
        cell.bias.set_data(Tensor(bias))
    x = Tensor(rng.standard_normal((batch, cin, 12, 10)).astype(np.float32))
    target = Tensor(rng.standard_normal((batch, cout, 12, 10)).astype(np.float32))
    np.testing.assert_allclose(im2col(x).asnumpy(), native(x).asnumpy(), rtol=1e-5, atol=1e-5)

    grads = []
    for cell in (native, im2col):
        fn = ms.value_and_grad(_Loss(cell, target), 0, cell.trainable_params())
        loss, (dx, (dw, db)) = fn(x)
        grads.append([loss.asnumpy(), dx.asnumpy(), dw.asnumpy(), db.asnumpy()])
    for got, want in zip(grads[1], grads[0]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_tap_layouts_of_ipts_convolutions():
    """The layouts `tap_layout`'s docstring names for IPT's head, upsampler and last conv."""
    assert conv_module.tap_layout(3, 64, 3) == "input"
    assert conv_module.tap_layout(64, 64, 5) == "rows"
    assert conv_module.tap_layout(64, 256, 3) == "input"
    assert conv_module.tap_layout(64, 576, 3) == "input"
    assert conv_module.tap_layout(64, 3, 3) == "output"


def test_whole_model_same_in_both_formulations():
    """Same parameter names and the same output: checkpoints move between CPUs unchanged."""
    cfg = load_config("ipt_tiny", {"tasks": ["sr_x2", "denoise_30"]})
    native = _built(NATIVE, lambda: IPT(cfg))
    im2col = _built(IM2COL, lambda: IPT(cfg))
    params = {p.name: p for p in im2col.get_parameters()}
    assert sorted(params) == sorted(p.name for p in native.get_parameters())
    for p in native.get_parameters():
        params[p.name].set_data(p.data.copy())
    x = Tensor(np.random.default_rng(0).uniform(0, 255, (2, 3, 48, 48)).astype(np.float32))
    for task in ("sr_x2", "denoise_30"):
        want = native.task_net(task)(x).asnumpy()
        got = im2col.task_net(task)(x).asnumpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)


def test_unknown_formulation_is_refused():
    with pytest.raises(ValueError, match="unknown convolution formulation"):
        set_formulation("winograd")
    assert conv_module.formulation() in (NATIVE, IM2COL)


def test_first_model_decides_once_by_body_size(monkeypatch):
    """A large body asks for im2col, a small one or an exported file for Conv2D; the first call
    fixes the process's choice (oneDNN reads its ISA once)."""
    asked = []

    def plan(target, native_convs=False):
        asked.append(native_convs)
        return (NATIVE if native_convs else IM2COL), None

    monkeypatch.setattr(conv_module, "plan_cpu_kernels", plan)
    monkeypatch.setattr(conv_module, "_current", None)
    assert conv_module.choose_formulation("CPU", 64.0) == IM2COL
    assert conv_module.choose_formulation("CPU", 0.9) == IM2COL  # already decided
    assert asked == [False]
    for body, native, want in ((0.9, False, NATIVE), (64.0, True, NATIVE)):
        monkeypatch.setattr(conv_module, "_current", None)
        assert conv_module.choose_formulation("CPU", body, native=native) == want
    assert asked == [False, True, True]


@pytest.mark.parametrize("level", ["O1", "O2"])
def test_im2col_runs_under_mixed_precision(level):
    """An AVX-512 CPU with a large body can meet --amp_level: the im2col path casts its weight to
    the activations' dtype and stays close to float32."""
    from src.precision import apply_precision
    cfg = load_config("ipt_tiny", {"tasks": ["sr_x2"]})
    fp32 = _built(IM2COL, lambda: IPT(cfg))
    low = _built(IM2COL, lambda: IPT(cfg))
    params = {p.name: p for p in low.get_parameters()}
    for p in fp32.get_parameters():
        params[p.name].set_data(p.data.copy())
    apply_precision(low, level)
    x = Tensor(np.random.default_rng(1).uniform(0, 255, (2, 3, 48, 48)).astype(np.float32))
    want = fp32.task_net("sr_x2")(x).asnumpy()
    got = low.task_net("sr_x2")(x).asnumpy()
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert np.abs(got - want).mean() < 0.05 * np.abs(want).mean()
