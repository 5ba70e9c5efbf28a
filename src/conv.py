"""How IPT's convolutions are computed: MindSpore's Conv2D (oneDNN), or im2col + one matmul.

MindSpore 2.10 hands oneDNN its CPU convolutions in plain NCHW layout. On x86 CPUs with AVX-512,
oneDNN runs those forward and backward-data through a reference kernel (`jit_uni_ncsp:conv+ref`,
about 1 GFLOP/s). Capping oneDNN at AVX2 fixes them, but MindSpore's MatMul/BatchMatMul are oneDNN
primitives too and the cap slows them (`gemm:jit:f32` instead of `brg_matmul:avx512_core`). The
`im2col` formulation keeps both fast: shifted views of the padded input (or of the partial
outputs) and one batched matmul, laid out per convolution to move the least data (`tap_layout`);
its gradient is matmuls, slices, adds and concats, none of them a convolution.

im2col pays where the transformer body's matmuls dominate (IPT-base, 64 GFLOP per tile: forward
17-27% and training step 14-16% faster than under the cap, measured on a Xeon with AVX-512), not
for a small body (ipt_tiny, 0.9 GFLOP: its extra kernels cost 16% per training step and 1.3 s
more graph compile). So the first model built in a process chooses, once, by the size of its body
(`choose_formulation`), and `src/cpu_isa.plan_cpu_kernels` sets the cap or not before oneDNN
starts; later models of the process keep that choice. GPU, Ascend, AVX2-only CPUs and exported
files use MindSpore's Conv2D. The parameters (`weight` (O, C, k, k), `bias`) and their names are the
same either way, so checkpoints and converted official weights load unchanged.
"""
from __future__ import annotations

from typing import Optional

from mindspore import nn, ops

from src.cpu_isa import IM2COL, NATIVE, plan_cpu_kernels

FORMULATIONS = (NATIVE, IM2COL)
IM2COL_MIN_BODY_GFLOP = 8.0  # between the measured ipt_tiny (0.9: Conv2D faster) and IPT-base (64: im2col)

_current: Optional[str] = None  # decided once per process


def choose_formulation(device_target: str, body_gflop: float, native: bool = False) -> str:
    """The process's formulation, decided at the first call (and the oneDNN cap with it).

    `native` asks for MindSpore's Conv2D (an exported file, export.py). Must come before the
    process's first oneDNN kernel, as model construction and setup_device do.
    """
    global _current
    if _current is None:
        prefer_native = native or body_gflop < IM2COL_MIN_BODY_GFLOP
        _current, _ = plan_cpu_kernels(device_target, native_convs=prefer_native)
    return _current


def set_formulation(name: Optional[str]) -> None:
    """Force the formulation of the Conv2d built from now on (tests and benches); None: undecided."""
    global _current
    if name is not None and name not in FORMULATIONS:
        raise ValueError(f"unknown convolution formulation {name!r}: one of {', '.join(FORMULATIONS)}")
    _current = name


def formulation() -> str:
    return _current or NATIVE


def tap_layout(in_channels: int, out_channels: int, kernel: int) -> str:
    """Where im2col puts a k x k convolution's taps: the layout that moves the least data.

    Per output pixel, roughly: "input" (all k*k shifted views of the input stacked, one matmul)
    moves 2k(k+1)C floats; "rows" (k column shifts of the input stacked, one matmul giving k row
    partials of the output, summed shifted) 2kC + 2kO + 3(k-1)O; "output" (one matmul of every tap,
    k*k shifted output partials summed) 6k^2 O + C. IPT-base: the head's 3->64 takes "input", its
    5x5 64->64 "rows", the upsampler's 64->256 "input", the last 64->3 "output".
    """
    c, o, k = in_channels, out_channels, kernel
    if k == 1:
        return "input"
    costs = {"input": 2 * k * (k + 1) * c, "rows": 2 * k * c + 2 * k * o + 3 * (k - 1) * o,
             "output": 6 * k * k * o + c}
    return min(costs, key=costs.get)


class Conv2d(nn.Conv2d):
    """A stride-1 'same' convolution with bias (EDSR's default_conv), in either formulation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, pad_mode="pad",
                         padding=kernel_size // 2, has_bias=True)
        self.im2col = formulation() == IM2COL
        if self.im2col:
            # The backward recomputes the shifted views instead of keeping them from the forward:
            # IPT-base at batch 2 trains in 0.13 GB less, with the same numbers.
            self.recompute()
        self.kernel = kernel_size
        self.half = kernel_size // 2
        self.taps = tuple(range(kernel_size))
        self.layout = tap_layout(in_channels, out_channels, kernel_size)
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

    def _weight_matmul(self, weight, cols):
        """(R, K) weight rows times (B, K, N) columns, for every image of the batch."""
        b = cols.shape[0]
        weight = ops.cast(weight, cols.dtype)
        return self.batch_matmul(ops.broadcast_to(weight.reshape((1,) + weight.shape), (b,) + weight.shape), cols)

    def im2col_forward(self, x):
        """(B, C, H, W) -> (B, O, H, W): shifted views and one matmul (`tap_layout`), + bias."""
        if self.layout == "input":
            y = self._input_taps(x)
        elif self.layout == "rows":
            y = self._row_taps(x)
        else:
            y = self._output_taps(x)
        # BiasAdd, not `+ bias.reshape(1, O, 1, 1)`: an implicitly broadcasting Add keeps 16 bytes per
        # element for the compiled graph's life on CPU (src/common.expand_to).
        return self.bias_add(y, ops.cast(self.bias, x.dtype))

    def _input_taps(self, x):
        """W (O, k*k*C) @ the k*k shifted views of the input (B, k*k*C, H*W).

        The views are cut in two passes, k column shifts then k row shifts of those (channel order
        (row, column, c), the weight's (O, kh, kw, C) order): 2k slices and 2 concats instead of
        k*k slices, which took 1.5x as long to compile for the same run time."""
        b, c, h, w = x.shape
        k, out = self.kernel, self.out_channels
        cols = x
        if k > 1:
            padded = self.pad_zeros(x)
            wide = ops.concat([self.window(padded, (0, 0, 0, j), (b, c, h + k - 1, w)) for j in self.taps], 1)
            cols = ops.concat([self.window(wide, (0, 0, i, 0), (b, k * c, h, w)) for i in self.taps], 1)
        weight = self.weight.transpose(0, 2, 3, 1).reshape(out, k * k * c)
        return self._weight_matmul(weight, cols.reshape(b, k * k * c, h * w)).reshape(b, out, h, w)

    def _row_taps(self, x):
        """The k column shifts of the padded input stacked (B, k*C, (H+k-1)*W); one matmul with the
        weight as (kh*O, kw*C) gives each kernel row's partial output over all padded rows, and
        output row y sums row i's partial at padded row y+i: k slices of the flat rows, k-1 adds."""
        b, c, h, w = x.shape
        k, out = self.kernel, self.out_channels
        rows = h + k - 1
        padded = self.pad_zeros(x)
        wide = ops.concat([self.window(padded, (0, 0, 0, j), (b, c, rows, w)) for j in self.taps], 1)
        weight = self.weight.transpose(2, 0, 3, 1).reshape(k * out, k * c)
        partial = self._weight_matmul(weight, wide.reshape(b, k * c, rows * w))
        y = self.window(partial, (0, 0, 0), (b, out, h * w))
        for i in self.taps[1:]:
            y = y + self.window(partial, (0, i * out, i * w), (b, out, h * w))
        return y.reshape(b, out, h, w)

    def _output_taps(self, x):
        """Every tap's partial output in one matmul, weight as (kh*kw*O, C); the output sums the
        k*k partials shifted by their taps (a few output channels: IPT's last conv to RGB)."""
        b, c, h, w = x.shape
        k, out = self.kernel, self.out_channels
        weight = self.weight.transpose(2, 3, 0, 1).reshape(k * k * out, c)
        partial = self.pad_zeros(self._weight_matmul(weight, x.reshape(b, c, h * w)).reshape(b, k * k * out, h, w))
        y = None
        for i in self.taps:
            for j in self.taps:
                tap = self.window(partial, (0, (i * k + j) * out, i, j), (b, out, h, w))
                y = tap if y is None else y + tap
        return y
