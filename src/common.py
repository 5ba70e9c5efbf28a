"""Convolutional building blocks of IPT's heads and tails (EDSR-style), named as the official model.

Attribute names and `SequentialCell` positions are chosen so that MindSpore parameter names equal
the official PyTorch state-dict keys (`head.0.1.body.2.weight`, `tail.2.0.2.bias`, ...).
"""
from __future__ import annotations

import math

import numpy as np
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


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with torch's parameter names (`weight`, `bias`) and eps 1e-5."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(dim, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(dim, np.float32)), name="bias")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

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


