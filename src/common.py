"""Convolutional building blocks of IPT's heads and tails (EDSR-style), named as the official model.

Attribute names and `SequentialCell` positions are chosen so that MindSpore parameter names equal
the official PyTorch state-dict keys (`head.0.1.body.2.weight`, `tail.2.0.2.bias`, ...).
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor

from src.conv import Conv2d

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean used by EDSR/IPT


def conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """A 'same' convolution with bias, as EDSR's default_conv (formulation: src/conv.py)."""
    return Conv2d(in_channels, out_channels, kernel_size)


class MeanShift(nn.Cell):
    """Frozen 1x1 conv adding or subtracting the RGB mean (a parameter in the official state dict)."""

    def __init__(self, rgb_range: float, sign: int) -> None:
        super().__init__()
        weight = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
        bias = sign * rgb_range * np.asarray(RGB_MEAN, dtype=np.float32)
        self.weight = Parameter(Tensor(weight), name="weight", requires_grad=False)
        self.bias = Parameter(Tensor(bias), name="bias", requires_grad=False)
        # A tuple kernel size: MindSpore 2.10's ONNX exporter fails on an int one.
        self.conv = ops.Conv2D(out_channel=3, kernel_size=(1, 1))
        self.bias_add = ops.BiasAdd()

    def construct(self, x):
        return self.bias_add(self.conv(x, self.weight), self.bias)


class ResBlock(nn.Cell):
    """x + conv(ReLU(conv(x))): no batch norm, residual scale 1."""

    def __init__(self, n_feats: int, kernel_size: int) -> None:
        super().__init__()
        self.body = nn.SequentialCell([conv(n_feats, n_feats, kernel_size), nn.ReLU(),
                                       conv(n_feats, n_feats, kernel_size)])

    def construct(self, x):
        return x + self.body(x)


def make_head(n_colors: int, n_feats: int) -> nn.SequentialCell:
    """Per-task head: 3x3 conv to n_feats, then two residual blocks of 5x5 convs."""
    return nn.SequentialCell([conv(n_colors, n_feats, 3), ResBlock(n_feats, 5), ResBlock(n_feats, 5)])


def make_upsampler(scale: int, n_feats: int) -> nn.Cell:
    """Pixel-shuffle upsampler (x2^n or x3); identity for scale 1 (empty in the official model)."""
    layers = []
    if scale == 1:
        return nn.Identity()
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"unsupported scale {scale}: IPT's tails handle 1, 2, 3 and powers of 2")
    return nn.SequentialCell(layers)


def make_tail(scale: int, n_feats: int, n_colors: int) -> nn.SequentialCell:
    """Per-task tail: upsampler, then a 3x3 conv back to RGB."""
    return nn.SequentialCell([make_upsampler(scale, n_feats), conv(n_feats, n_colors, 3)])


def cpu_backwards() -> bool:
    """Whether norms and softmaxes get the CPU-tuned backwards below (`_LayerNormOp`,
    transformer._LastAxisSoftmax): on CPU, where they were measured against MindSpore's kernels.
    GPU and Ascend keep their own fused LayerNormGrad and SoftmaxGrad (same gradients)."""
    return ms.get_context("device_target") == "CPU"


def row_sums(x, scale: float = 1.0):
    """(rows, n) -> (rows, 1): scale * the sum of each row, as a matrix-vector product.

    MindSpore's CPU ReduceSum over the last axis runs at a few ns per element, 4-5x slower than
    a MatMul with a ones column (IPT-base's attention maps, Zen 4; ms.Profiler, docs/DEV_NOTES.md)."""
    return ops.matmul(x, ops.fill(x.dtype, (x.shape[-1], 1), scale))


def spread_rows(column, n: int):
    """(rows, 1) -> (rows, n), every row its value repeated: an outer product with a ones row,
    3x faster than BroadcastTo on CPU and, like it, no implicit broadcast (see `expand_to`)."""
    return ops.matmul(column, ops.ones((1, n), column.dtype))


class _LayerNormOp(nn.Cell):
    """LayerNorm over the last axis, (x, gamma, beta) -> (y, mean, variance) as ops.LayerNorm, made
    of matmuls and same-shape ops both ways. MindSpore's CPU kernels took 0.50 ms forward for
    IPT-base's (256, 576) tokens (this: 0.17 ms) and 5.3 ms backward for (512, 576) (this: 2.7 ms),
    Zen 4; the same values to float rounding. The row statistics are matrix-vector products and
    are spread back over the rows by outer products (`row_sums`, `spread_rows`), gamma with them."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.portable = False  # set by for_export
        self.kernel = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x, gamma, beta):
        if self.portable:
            return self.kernel(x, gamma, beta)
        shape = x.shape
        n = shape[-1]
        rows = x.size // n
        x2 = x.reshape(rows, n)
        mean = row_sums(x2, 1.0 / n)
        centred = x2 - spread_rows(mean, n)
        variance = row_sums(centred * centred, 1.0 / n)
        scale = ops.matmul(ops.rsqrt(variance + self.eps), gamma.reshape(1, n))  # inv_std[i] * gamma[j]
        shift = ops.matmul(ops.ones((rows, 1), x.dtype), beta.reshape(1, n))
        return (centred * scale + shift).reshape(shape), mean, variance

    def bprop(self, x, gamma, beta, out, dout):
        shape = x.shape
        n = shape[-1]
        rows = x.size // n
        dy = dout[0].reshape(rows, n)
        # Everything full-size depends on dy: computed when the backward reaches this norm, not
        # scheduled early and kept through the forward. Untied, the gamma rows below (built from a
        # parameter and constants only) were made for all 60 norms of IPT-base up front: +0.9 GB
        # peak in a batch-4 train step (Zen 4, bench/bench_vs_torch.py).
        x2 = ops.depend(x.reshape(rows, n), dy)
        mean, variance = ops.depend(out[1].reshape(rows, 1), dy), ops.depend(out[2].reshape(rows, 1), dy)
        gamma_rows = ops.matmul(ops.depend(ops.ones((rows, 1), x.dtype), dy), gamma.reshape(1, n))
        inv_std = spread_rows(ops.rsqrt(variance + self.eps), n)
        x_hat = (x2 - spread_rows(mean, n)) * inv_std
        ones_row = ops.ones((1, rows), x.dtype)
        d_beta = ops.matmul(ones_row, dy).reshape(gamma.shape)
        d_gamma = ops.matmul(ones_row, dy * x_hat).reshape(gamma.shape)
        g = dy * gamma_rows
        dx = (g - spread_rows(row_sums(g, 1.0 / n), n) - x_hat * spread_rows(row_sums(g * x_hat, 1.0 / n), n))
        return (dx * inv_std).reshape(shape), d_gamma, d_beta


def for_export(net: nn.Cell) -> None:
    """Build `net`'s norms as one LayerNorm op each, for an exported file: a standard op that any
    runtime can map (MindSpore 2.10's ONNX exporter has no Rsqrt), and no static row count in a
    file with a dynamic batch. For graphs compiled after this call; the same values to rounding."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, _LayerNormOp):
            cell.portable = True


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with torch's parameter names (`weight`, `bias`) and eps 1e-5."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(dim, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(dim, np.float32)), name="bias")
        self.norm = (_LayerNormOp(eps) if cpu_backwards()
                     else ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps))

    def construct(self, x):
        return self.norm(x, self.weight, self.bias)[0]


def expand_to(x, like):
    """`x` broadcast to the shape of `like`, as its own op, for the other operand of an add/sub/mul/div.

    MindSpore's CPU kernels of implicitly broadcasting binary ops keep per-element index tables (16
    bytes per output element) for the whole life of a compiled graph, and training holds one graph
    per task: an explicit BroadcastTo and a same-shape op keep nothing (bench/bench_train.py
    --graphs measures the memory each graph holds).
    """
    return ops.broadcast_to(x, like.shape)


def dropout(rate: float) -> nn.Cell:
    """Dropout, or nothing at all when the rate is 0 (IPT's default) to keep the graph lean."""
    return nn.Dropout(p=rate) if rate > 0 else nn.Identity()


