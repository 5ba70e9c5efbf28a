"""IPT-base's attention softmax: MindSpore's kernel against a hand-written C++ one, alone and in the model.

    python bench/bench_softmax.py [--batch 8] [--calls 15] [--forward] [--threads 0] [--json out.json]

Part of the floor under IPT-base's tile forward on CPU (`bench_vs_torch.py --cases mm:B` gives the
matmuls' part): every 48x48 tile runs 36 softmaxes over (12 heads, 256, 256) attention maps, so a
batch of B tiles runs them over (12 B, 256, 256). Timed alternately in one GRAPH_MODE process, each
as a graph of CHAIN softmaxes in a row: MindSpore's `ops.Softmax`, and, where a C++ compiler is
found, a plain C++ softmax (row max, exp and sum, scale; OpenMP over rows; -O3 -march=native
-ffast-math) called through `ops.Custom(func_type="aot")`, the way a project could plug in its own
CPU kernel. Reported: ms per softmax and per tile (x 36 / B), and the largest difference of one
softmax between the two. `--forward` also builds IPT-base's sr_x2 tile forward twice, with either
softmax in every attention, and calls the two alternately: what the kernel gives inside the model.
The C++ source is compiled in a temporary folder, the only one MindSpore may load AOT libraries
from (MS_CUSTOM_AOT_WHITE_LIST). Nothing of it is used by the model.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from mindspore import nn, ops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_cpu_forms import alternate, pair_ratios  # noqa: E402
from src.cpu_isa import cpu_flags, cpu_name, isa_summary  # noqa: E402

HEADS, TOKENS, SOFTMAXES_PER_TILE = 12, 256, 36  # IPT-base: 12 heads, 16x16 words, 12 + 2 x 12 attentions
CHAIN = 6

SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
extern "C" int RowSoftmax(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                          void *stream, void *extra) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int nd = ndims[0];
  const int64_t n = shapes[0][nd - 1];
  int64_t rows = 1;
  for (int i = 0; i < nd - 1; ++i) rows *= shapes[0][i];
#pragma omp parallel for num_threads(SOFTMAX_THREADS) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * n;
    float *yr = y + r * n;
    float m = xr[0];
    for (int64_t j = 1; j < n; ++j) m = std::max(m, xr[j]);
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) { const float e = std::exp(xr[j] - m); yr[j] = e; s += e; }
    const float inv = 1.f / s;
    for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
  }
  return 0;
}
"""


def build_library(folder: Path, threads: int) -> tuple:
    """(path of the compiled library or None, the compiler's name or why there is none)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return None, "no C++ compiler on PATH"
    src, lib = folder / "row_softmax.cc", folder / "librow_softmax.so"
    src.write_text(SOURCE)
    cmd = [cxx, "-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC",
           f"-DSOFTMAX_THREADS={threads}", str(src), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    name = Path(cxx).name  # recorded without this machine's folders
    if proc.returncode != 0:
        return None, f"{name} failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"
    return lib, name


def library_softmax(library):
    """The library's softmax over the last axis as a MindSpore primitive (ops.Custom, AOT)."""
    return ops.Custom(f"{library}:RowSoftmax", out_shape=lambda x: x, out_dtype=lambda x: x, func_type="aot")


class _Softmax(nn.Cell):
    """One softmax over the last axis: MindSpore's kernel, or the library's (`library` given)."""

    def __init__(self, library=None) -> None:
        super().__init__()
        self.op = library_softmax(library) if library else ops.Softmax(axis=-1)

    def construct(self, x):
        return self.op(x)


class _Chain(nn.Cell):
    """`length` softmaxes in a row, each on the previous one's output (nothing to merge or prune)."""

    def __init__(self, library, length: int) -> None:
        super().__init__()
        self.steps = nn.CellList([_Softmax(library) for _ in range(length)])

    def construct(self, x):
        for step in self.steps:
            x = step(x)
        return x


def compare(times: dict, per: float) -> dict:
    """Medians (seconds / per) of each kind and, with both, the per-pair ratio c++ / MindSpore."""
    out = {kind: float(np.median(t)) / per for kind, t in times.items()}
    if "c++" in times:
        out.update(pair_ratios(times["mindspore"], times["c++"]))
    return out


def measure_alone(batch: int, calls: int, library) -> dict:
    """The softmaxes alone, in chains of CHAIN, on IPT-base's (12 B, 256, 256) maps."""
    import mindspore as ms
    libraries = {"mindspore": None, "c++": library}
    kinds = ["mindspore"] + (["c++"] if library else [])
    x = ms.Tensor(np.random.default_rng(0).normal(0, 3, (HEADS * batch, TOKENS, TOKENS)).astype(np.float32))
    once = {k: _Chain(libraries[k], 1)(x).asnumpy() for k in kinds}
    chains = {k: _Chain(libraries[k], CHAIN) for k in kinds}
    for k in kinds:
        chains[k](x).asnumpy()  # compile and warm up
    times = alternate({k: (lambda c=chains[k]: c(x).asnumpy()) for k in kinds}, calls)
    seconds = compare(times, CHAIN)
    out = {"batch": batch, "shape": [HEADS * batch, TOKENS, TOKENS], "calls": calls}
    for k in kinds:
        out[k] = {"ms_per_softmax": 1e3 * seconds[k], "ms_per_tile": 1e3 * seconds[k] * SOFTMAXES_PER_TILE / batch}
    if library:
        out.update(max_diff=float(np.abs(once["mindspore"] - once["c++"]).max()), ratio=seconds["ratio"],
                   ratio_quartiles=seconds["ratio_quartiles"])
    return out


def measure_forward(batch: int, calls: int, threads: int, library) -> dict:
    """IPT-base's sr_x2 tile forward built twice, with MindSpore's softmax and with the library's
    in every attention (`transformer._LastAxisSoftmax`, the CPU softmax), called alternately."""
    import mindspore as ms
    import src.transformer as transformer
    from bench.bench_vs_torch import FWD_WARMUP, random_pair
    from src.config import load_config
    from src.ipt import IPT
    cfg = load_config(None, {"tasks": ["sr_x2"], "threads": threads, "mode": "GRAPH", "device_target": "CPU",
                             "batch_size": batch})
    x = ms.Tensor(random_pair(batch)[0])
    plain_init = transformer._LastAxisSoftmax.__init__

    def library_init(self):
        plain_init(self)
        self.op = library_softmax(library)
    forwards, outputs = {}, {}
    for kind in ("mindspore", "c++"):
        transformer._LastAxisSoftmax.__init__ = library_init if kind == "c++" else plain_init
        try:
            ms.set_seed(0)
            net = IPT(cfg)
            net.set_train(False)
            task_net = net.task_net("sr_x2")
            forwards[kind] = lambda t=task_net: t(x).asnumpy()
            for _ in range(FWD_WARMUP):
                outputs[kind] = forwards[kind]()
        finally:
            transformer._LastAxisSoftmax.__init__ = plain_init
    seconds = compare(alternate(forwards, calls), batch)
    return {"batch": batch, "calls": calls, "mindspore_s_per_tile": seconds["mindspore"],
            "c++_s_per_tile": seconds["c++"], "ratio": seconds["ratio"],
            "ratio_quartiles": seconds["ratio_quartiles"],
            "max_output_diff": float(np.abs(outputs["mindspore"] - outputs["c++"]).max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="tiles per call: maps of (12 x batch, 256, 256)")
    parser.add_argument("--calls", type=int, default=15, help="alternating timed calls of each")
    parser.add_argument("--forward", action="store_true",
                        help="also time IPT-base's tile forward with either softmax (needs the compiler)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both (0 = all cores)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    threads = args.threads or os.cpu_count() or 1
    # Idle OpenMP threads sleep instead of spinning beside MindSpore's own (spinning, they made the
    # forward 1.6x slower instead of 1.13x; Zen 3, 2026-12-05). Read when the library first runs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from src.config import load_config
    from src.utils import setup_device
    setup_device(load_config(None, {"threads": threads, "mode": "GRAPH", "device_target": "CPU"}))
    with tempfile.TemporaryDirectory(prefix="ipt_softmax_") as tmp:
        folder = Path(tmp).resolve()
        os.environ["MS_CUSTOM_AOT_WHITE_LIST"] = str(folder)  # read when the library is loaded
        library, compiler = build_library(folder, threads)
        result = measure_alone(args.batch, args.calls, library)
        if args.forward and library:
            result["forward"] = measure_forward(args.batch, args.calls, threads, library)
    result.update(machine=f"{cpu_name()}, {isa_summary(cpu_flags())}, {threads} threads", compiler=compiler,
                  omp_wait_policy=os.environ["OMP_WAIT_POLICY"])
    print(f"\nIPT-base attention softmax over {tuple(result['shape'])}, fp32, {result['machine']}")
    for kind in ("mindspore", "c++"):
        if kind in result:
            r = result[kind]
            print(f"  {kind:10s} {r['ms_per_softmax']:7.2f} ms per softmax, {r['ms_per_tile']:6.2f} ms per tile (alone)")
    if not library:
        print(f"  no hand-written softmax: {compiler}")
    else:
        q = result["ratio_quartiles"]
        print(f"  alone, hand-written / MindSpore: {result['ratio']:.2f} (median of pairs, quartiles "
              f"{q[0]:.2f}-{q[1]:.2f}); largest difference {result['max_diff']:.2g}")
    if "forward" in result:
        f, q = result["forward"], result["forward"]["ratio_quartiles"]
        print(f"  IPT-base tile forward: {f['mindspore_s_per_tile']:.3f} s per tile with MindSpore's softmax, "
              f"{f['c++_s_per_tile']:.3f} s with the hand-written one: {f['ratio']:.2f} (quartiles "
              f"{q[0]:.2f}-{q[1]:.2f}); outputs differ by up to {f['max_output_diff']:.2g}")
    if args.json:
        from src.utils import write_text_atomic
        write_text_atomic(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
