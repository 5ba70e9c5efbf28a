"""How IPT's convolutions are computed: MindSpore's Conv2D (oneDNN), or im2col + one matmul.

MindSpore 2.10 hands oneDNN its CPU convolutions in plain NCHW layout. On x86 CPUs with AVX-512,
oneDNN runs those forward and backward-data through a reference kernel (`jit_uni_ncsp:conv+ref`,
about 1 GFLOP/s), while its AVX-512 matmuls (`brg_matmul`) run 1.4-2.3x faster than the AVX2 ones.
Capping oneDNN at AVX2 fixes the convolutions but slows every matmul of the transformer. The
`im2col` formulation keeps both fast: the k*k shifted views of the padded input are stacked on the
channel axis and multiplied by the weight in one batched matmul (AVX-512 speed, and its gradient is
matmuls, slices and a concat, none of them a convolution).

`src/cpu_isa.plan_cpu_kernels` decides once per process which formulation the CPU gets;
`setup_device` records it here before any model is built. GPU, Ascend, AVX2-only CPUs and exported
files keep MindSpore's own Conv2D. The parameters (`weight` (O, C, k, k), `bias`) and their names
are the same either way, so checkpoints and converted official weights load unchanged.
"""
from __future__ import annotations

from mindspore import nn, ops

from src.cpu_isa import IM2COL, NATIVE

FORMULATIONS = (NATIVE, IM2COL)

_current = NATIVE


def set_formulation(name: str) -> None:
    """The formulation of every Conv2d built from now on in this process."""
    global _current
    if name not in FORMULATIONS:
        raise ValueError(f"unknown convolution formulation {name!r}: one of {', '.join(FORMULATIONS)}")
    _current = name


def formulation() -> str:
    return _current


class Conv2d(nn.Conv2d):
    """A stride-1 'same' convolution with bias (EDSR's default_conv), in either formulation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, pad_mode="pad",
                         padding=kernel_size // 2, has_bias=True)
        self.im2col = formulation() == IM2COL
        self.kernel = kernel_size
        half = kernel_size // 2
        self.offsets = tuple((i, j) for i in range(kernel_size) for j in range(kernel_size))
        self.half = half
        self.window = ops.Slice()
        self.batch_matmul = ops.BatchMatMul()

    def construct(self, x):
        if not self.im2col:
            return super().construct(x)
        return self.im2col_forward(x)

    def pad_zeros(self, x):
        """Zero padding as two concats: MindSpore's CPU Pad/PadV3 kernels are 10-18x slower here."""
        b, c, h, w = x.shape
        side = ops.zeros((b, c, h, self.half), x.dtype)
        x = ops.concat((side, x, side), 3)
        rows = ops.zeros((b, c, self.half, w + 2 * self.half), x.dtype)
        return ops.concat((rows, x, rows), 2)

    def im2col_forward(self, x):
        """(B, C, H, W) -> (B, O, H, W) as W (O, k*k*C) @ shifted views (B, k*k*C, H*W), + bias."""
        b, c, h, w = x.shape
        k, out = self.kernel, self.out_channels
        padded = self.pad_zeros(x) if k > 1 else x
        cols = ops.concat([self.window(padded, (0, 0, o[0], o[1]), (b, c, h, w)) for o in self.offsets], 1)
        weight = ops.cast(self.weight, x.dtype).transpose(0, 2, 3, 1).reshape(1, out, k * k * c)
        y = self.batch_matmul(ops.broadcast_to(weight, (b, out, k * k * c)), cols.reshape(b, k * k * c, h * w))
        return y.reshape(b, out, h, w) + ops.cast(self.bias, x.dtype).reshape(1, out, 1, 1)
