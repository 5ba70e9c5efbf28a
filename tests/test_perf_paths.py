"""Correctness of the speed-motivated code paths (no timing here: see bench/README.md).

The self-attention projection uses the whole `in_proj_weight` instead of slicing it (a full-range
StridedSlice is a slow kernel on CPU); it must compute exactly what the per-slice projections and
torch's multi-head attention compute.
"""
import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

from src.transformer import MultiheadAttention

DIM, HEADS, L = 24, 4, 10


class _Attn(nn.Cell):
    """Runs one attention entry point in a graph."""

    def __init__(self, attn: MultiheadAttention, kind: str) -> None:
        super().__init__()
        self.attn = attn
        self.kind = kind

    def construct(self, x, y):
        if self.kind == "self":
            return self.attn.self_attend(x)
        if self.kind == "shared":
            return self.attn.shared_qk_attend(x, y)
        return self.attn(x, y, y)


def _reference(x, qk_in, v_in, w_in, w_out, heads):
    """torch.nn.MultiheadAttention (no in-proj bias, no out bias) in float64 numpy."""
    b, l, e = x.shape
    d = e // heads
    q = (x @ w_in[:e].T) / np.sqrt(d)
    k = qk_in @ w_in[e:2 * e].T
    v = v_in @ w_in[2 * e:].T
    split = lambda t: t.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)  # noqa: E731
    s = split(q) @ split(k).transpose(0, 1, 3, 2)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = (p @ split(v)).transpose(0, 2, 1, 3).reshape(b, l, e)
    return out @ w_out.T


@pytest.fixture(params=[ms.GRAPH_MODE, ms.PYNATIVE_MODE], ids=["graph", "pynative"])
def mode(request):
    ms.set_context(mode=request.param)
    yield request.param
    ms.set_context(mode=ms.GRAPH_MODE)


def _setup(seed=0):
    ms.set_seed(seed)
    attn = MultiheadAttention(DIM, HEADS, 0.0, out_bias=False, kaiming_init=True)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, L, DIM)).astype(np.float32)
    y = rng.standard_normal((2, L, DIM)).astype(np.float32)
    return attn, x, y


def test_self_attend_full_weight_matches_torch_reference(mode):
    attn, x, _ = _setup()
    out = _Attn(attn, "self")(ms.Tensor(x), ms.Tensor(x)).asnumpy()
    w_in, w_out = attn.in_proj_weight.asnumpy().astype(np.float64), attn.out_proj.weight.asnumpy().astype(np.float64)
    ref = _reference(x.astype(np.float64), x.astype(np.float64), x.astype(np.float64), w_in, w_out, HEADS)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_self_attend_equals_sliced_projections(mode):
    """The fused path (whole weight) and the three-slice path give the same result."""
    attn, x, _ = _setup(1)
    fused = _Attn(attn, "self")(ms.Tensor(x), ms.Tensor(x)).asnumpy()
    sliced = _Attn(attn, "cross")(ms.Tensor(x), ms.Tensor(x)).asnumpy()
    shared = _Attn(attn, "shared")(ms.Tensor(x), ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(fused, sliced, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused, shared, rtol=1e-6, atol=1e-6)


def test_project_whole_weight_equals_parts(mode):
    """_project over [0, 3E) uses the parameter itself; it must equal the parts side by side."""
    attn, x, _ = _setup(2)

    class Proj(nn.Cell):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def construct(self, t):
            e = DIM
            return (self.attn._project(t, 0, 3 * e), self.attn._project(t, 0, e),
                    self.attn._project(t, e, 2 * e), self.attn._project(t, 2 * e, 3 * e))

    whole, *parts = [o.asnumpy() for o in Proj()(ms.Tensor(x))]
    assert whole.shape == (2 * L, 3 * DIM)
    np.testing.assert_allclose(whole, np.concatenate(parts, axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(whole, x.reshape(-1, DIM) @ attn.in_proj_weight.asnumpy().T, rtol=1e-5, atol=1e-5)


def test_shared_qk_and_cross_attention_match_reference(mode):
    """The decoder's paths (query-shared q/k, cross-attention) still slice the weight correctly."""
    attn, x, y = _setup(3)
    w_in, w_out = attn.in_proj_weight.asnumpy().astype(np.float64), attn.out_proj.weight.asnumpy().astype(np.float64)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    shared = _Attn(attn, "shared")(ms.Tensor(x), ms.Tensor(y)).asnumpy()
    np.testing.assert_allclose(shared, _reference(xd, xd, yd, w_in, w_out, HEADS), rtol=1e-5, atol=1e-5)
    cross = _Attn(attn, "cross")(ms.Tensor(x), ms.Tensor(y)).asnumpy()
    np.testing.assert_allclose(cross, _reference(xd, yd, yd, w_in, w_out, HEADS), rtol=1e-5, atol=1e-5)
