"""Which instruction set MindSpore's CPU convolutions (oneDNN) may use.

MindSpore 2.10 hands oneDNN its convolutions in plain NCHW layout. On AVX2 CPUs oneDNN runs them
as im2col + JIT sgemm (`gemm:jit`, at matmul speed). On AVX-512 CPUs it picks an AVX-512
implementation that is slow for plain layouts (oneDNN issue 1132: NCHW up to 1000x slower than
NHWC there); measured on a Zen 4 EPYC: 1 GFLOP/s, every command 4-8x slower. Capping oneDNN at
AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`) brings back the fast path. MindSpore's matmuls are its own nnacl
kernels with their own CPU dispatch, which the cap does not touch.

oneDNN reads the variable once, at its first primitive, so setting it in this process before the
first CPU kernel runs is enough (checked in tests/test_cpu_isa.py through the real commands).
`setup_device` calls `cap_onednn_isa` for the CPU target only: GPU and Ascend runs are untouched,
and so is a CPU without AVX-512 (the cap would equal what it has), or a user's own setting.
"""
from __future__ import annotations

import logging
import os
import platform
from typing import MutableMapping, Optional

LOG = logging.getLogger("ipt")

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
    """The CPU model name, for figures and logs ('unknown CPU' where it cannot be read)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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


def cap_onednn_isa(device_target: str = "CPU", env: Optional[MutableMapping[str, str]] = None,
                   flags: Optional[set] = None, machine: Optional[str] = None) -> Optional[str]:
    """Cap oneDNN at AVX2 on an x86 AVX-512 CPU for CPU runs; returns the value set, or None.

    Must run before MindSpore's first CPU kernel in the process (setup_device does it). Leaves
    the environment alone on GPU/Ascend, on CPUs without AVX-512, off x86, and when the user has
    set either oneDNN variable (any value, e.g. `ONEDNN_MAX_CPU_ISA=DEFAULT` to opt out).
    """
    env = os.environ if env is None else env
    if str(device_target) != "CPU":
        return None
    user = next((name for name in ISA_VARIABLES if name in env), None)
    if user:
        LOG.debug("oneDNN ISA left as set by the user: %s=%s", user, env[user])
        return None
    machine = (platform.machine() if machine is None else machine).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return None
    flags = cpu_flags() if flags is None else flags
    if "avx512f" not in flags:
        return None
    env["ONEDNN_MAX_CPU_ISA"] = CAP
    LOG.info("AVX-512 CPU: MindSpore's CPU convolutions capped at %s (ONEDNN_MAX_CPU_ISA=%s), "
             "4-8x faster there; set ONEDNN_MAX_CPU_ISA yourself to choose", CAP, CAP)
    return CAP
