"""Which instruction set MindSpore's CPU kernels (oneDNN) may use, and how convolutions run.

MindSpore 2.10 hands oneDNN its convolutions in plain NCHW layout. On AVX2 CPUs oneDNN runs them
as im2col + JIT sgemm (`gemm:jit`, at matmul speed). On AVX-512 CPUs it takes `jit_uni_ncsp`, which
for k x k kernels falls back to a reference kernel (1 GFLOP/s, forward and backward-data; oneDNN
issue 1132: NCHW up to 1000x slower than NHWC there): every command 4-8x slower. Capping oneDNN at
AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`) fixes the convolutions, but MindSpore's MatMul and BatchMatMul
are oneDNN primitives too (`brg_matmul:avx512_core` uncapped, `gemm:jit:f32` capped), and the cap
slows them 1.4-1.7x (Xeon, AVX-512: 2048^3 matmul, IPT-base tile). So on AVX-512 a process either
computes convolutions as im2col + matmul (src/conv.py) and leaves oneDNN uncapped, or runs
MindSpore's own Conv2D under the cap; src/conv.py chooses by model size, exported files take Conv2D.

oneDNN reads the variable once, at its first primitive, so setting it in this process before the
first CPU kernel runs is enough (checked in tests/test_cpu_isa.py through the real commands).
"""
from __future__ import annotations

import logging
import os
import platform
from typing import MutableMapping, Optional, Tuple

LOG = logging.getLogger("ipt")

NATIVE, IM2COL = "native", "im2col"  # the formulations of src/conv.py (which imports MindSpore)

ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN's name and its older alias
CAP = "AVX2"


def cpu_flags(path: str = "/proc/cpuinfo") -> set:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing, e.g. macOS)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    """The CPU model name with its x86 family and model, for figures and logs ('unknown CPU' where
    it cannot be read). Virtual machines often report a bare 'AMD EPYC': the family and model tell
    a Zen 3 (family 25 model 1) from a Zen 4 (family 25 model 17), whose MindSpore speeds differ."""
    fields = {}
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:  # the first processor's block is enough
                    break
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


def isa_summary(flags: Optional[set] = None) -> str:
    """'AVX-512 (avx512f avx512bw ...)' or 'AVX2': the vector ISA that matters for MindSpore's CPU kernels."""
    flags = cpu_flags() if flags is None else flags
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    if avx512:
        return "AVX-512 (" + " ".join(avx512) + ")"
    for isa in ("avx2", "avx", "sse4_2"):
        if isa in flags:
            return isa.upper().replace("_", ".")
    return platform.machine() or "unknown ISA"


def plan_cpu_kernels(device_target: str = "CPU", env: Optional[MutableMapping[str, str]] = None,
                     flags: Optional[set] = None, machine: Optional[str] = None,
                     native_convs: bool = False) -> Tuple[str, Optional[str]]:
    """How this process runs IPT's convolutions, and the oneDNN cap it sets: (formulation, cap).

    On an x86 AVX-512 CPU the CPU target gets the im2col formulation (src/conv.py) and oneDNN
    stays uncapped, so the transformer's matmuls keep AVX-512 speed. A process that runs
    MindSpore's own Conv2D there (`native_convs`: a small model, an exported file, export.py)
    gets the AVX2 cap instead. Everything else is left alone: GPU/Ascend, CPUs without AVX-512, non-x86, and a
    user's own oneDNN setting (any value, e.g. `ONEDNN_MAX_CPU_ISA=DEFAULT`), which also keeps
    MindSpore's Conv2D. Must run before MindSpore's first CPU kernel (setup_device does it).
    """
    env = os.environ if env is None else env
    if str(device_target) != "CPU":
        return NATIVE, None
    user = next((name for name in ISA_VARIABLES if name in env), None)
    if user:
        LOG.debug("oneDNN ISA left as set by the user: %s=%s", user, env[user])
        return NATIVE, None
    machine = (platform.machine() if machine is None else machine).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return NATIVE, None
    flags = cpu_flags() if flags is None else flags
    if "avx512f" not in flags:
        return NATIVE, None
    if native_convs:
        env["ONEDNN_MAX_CPU_ISA"] = CAP
        LOG.info("AVX-512 CPU running MindSpore's Conv2D: oneDNN capped at %s (ONEDNN_MAX_CPU_ISA=%s); "
                 "set ONEDNN_MAX_CPU_ISA yourself to choose", CAP, CAP)
        return NATIVE, CAP
    LOG.debug("AVX-512 CPU: convolutions as im2col + matmul, oneDNN uncapped")
    return IM2COL, None
