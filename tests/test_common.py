"""The model's shared pieces with their own CPU backward (src/common.py, src/transformer.py): built on
CPU only, with the same gradients as MindSpore's own ops (what GPU and Ascend get), to float rounding."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import nn, ops

import src.common
import src.transformer
from src.common import LayerNorm, row_sums, spread_rows
from src.transformer import Softmax


class _Weighted(nn.Cell):
    """sum(f(x) * w): its gradient with respect to x is f's backward applied to w."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def construct(self, x, w):
        return (self.f(x) * w).sum()


def _native(build, monkeypatch):
    """`build()` as on GPU and Ascend: with MindSpore's own LayerNorm and softmax backwards."""
    with monkeypatch.context() as patch:
        patch.setattr(src.common, "cpu_backwards", lambda: False)
        patch.setattr(src.transformer, "cpu_backwards", lambda: False)
        return build()


def test_cpu_backwards_only_on_cpu(monkeypatch):
    assert src.common.cpu_backwards()  # this suite runs on CPU
    assert isinstance(LayerNorm(4).norm, src.common._LayerNormOp)
    assert isinstance(Softmax().op, src.transformer._LastAxisSoftmax)
    assert isinstance(_native(lambda: LayerNorm(4), monkeypatch).norm, ops.LayerNorm)
    assert isinstance(_native(Softmax, monkeypatch).op, ops.Softmax)
    monkeypatch.setattr(src.common.ms, "get_context", lambda key: "GPU")
    assert not src.common.cpu_backwards()


def _grads(f, x, w, params):
    return ms.grad(_Weighted(f), (0,), params)(ms.Tensor(x), ms.Tensor(w))


def test_row_sums_and_spread_rows():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(row_sums(ms.Tensor(x)).asnumpy(), x.sum(1, keepdims=True))
    np.testing.assert_allclose(row_sums(ms.Tensor(x), 0.25).asnumpy(), x.mean(1, keepdims=True))
    np.testing.assert_array_equal(spread_rows(ms.Tensor(x[:, :1]), 5).asnumpy(), np.repeat(x[:, :1], 5, 1))


def test_layer_norm_forward_matches_numpy_and_mindspores():
    """The CPU forward (matmul row statistics) against float64 numpy and ops.LayerNorm, on rows
    with a large offset (a one-pass variance would lose digits there)."""
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(3, 5, 40)) * 2 + 50).astype(np.float32)
    gamma, beta = np.linspace(0.5, 1.5, 40).astype(np.float32), np.linspace(-1, 1, 40).astype(np.float32)
    ours = src.common._LayerNormOp(1e-5)
    y, mean, variance = (t.asnumpy() for t in ours(ms.Tensor(x), ms.Tensor(gamma), ms.Tensor(beta)))
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * gamma + beta
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(mean.ravel(), x64.mean(-1).ravel(), rtol=1e-6)
    np.testing.assert_allclose(variance.ravel(), x64.var(-1).ravel(), rtol=1e-4)
    native = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=1e-5)
    np.testing.assert_allclose(y, native(ms.Tensor(x), ms.Tensor(gamma), ms.Tensor(beta))[0].asnumpy(),
                               rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_layer_norm_gradients_match_mindspores(mode, monkeypatch):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 7, 24)) * 3 + 1).astype(np.float32)
    w = rng.normal(size=x.shape).astype(np.float32)
    ours = LayerNorm(24)
    ours.weight.set_data(ms.Tensor(np.linspace(0.5, 1.5, 24).astype(np.float32)))
    ours.bias.set_data(ms.Tensor(np.linspace(-1, 1, 24).astype(np.float32)))
    native = _native(lambda: LayerNorm(24), monkeypatch)
    native.weight, native.bias = ours.weight, ours.bias
    ms.set_context(mode=mode)
    try:
        got = _grads(ours, x, w, ours.trainable_params())
        want = _grads(native, x, w, ours.trainable_params())
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    (gx, (gw, gb)), (wx, (ww, wb)) = got, want
    np.testing.assert_allclose(gx.asnumpy(), wx.asnumpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw.asnumpy(), ww.asnumpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb.asnumpy(), wb.asnumpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(gw.asnumpy()).max() > 0.1 and np.abs(gx.asnumpy()).max() > 0.1


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_softmax_gradient_matches_mindspores(mode, monkeypatch):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(3, 5, 9)) * 2).astype(np.float32)
    w = rng.normal(size=x.shape).astype(np.float32)
    ms.set_context(mode=mode)
    try:
        got = _grads(Softmax(), x, w, None)
        want = _grads(_native(Softmax, monkeypatch), x, w, None)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    got, want = (g[0] if isinstance(g, tuple) else g for g in (got, want))
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(want.asnumpy()).max() > 0.01


def test_for_export_builds_norms_as_one_layer_norm_op(monkeypatch):
    """Exported files hold MindSpore's LayerNorm (the ONNX exporter has no Rsqrt): the
    same values as the GPU/Ascend build, which uses that op."""
    rng = np.random.default_rng(3)
    x = ms.Tensor((rng.normal(size=(2, 6, 16)) * 2 + 3).astype(np.float32))

    def build():
        ms.set_seed(0)
        return nn.SequentialCell([LayerNorm(16), nn.Dense(16, 16), LayerNorm(16)])
    cpu_graph = build()(x).asnumpy()
    net = build()
    src.common.for_export(net)
    assert all(cell.norm.portable for cell in (net[0], net[2]))
    exported = net(x).asnumpy()
    np.testing.assert_array_equal(exported, _native(build, monkeypatch)(x).asnumpy())
    np.testing.assert_allclose(exported, cpu_graph, rtol=1e-5, atol=1e-5)
