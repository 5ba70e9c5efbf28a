"""Health check for a new machine: do IPT's convolutions and matmuls both run at full speed?

    python bench/check_cpu.py [--threads 0] [--seconds 1] [--json out.json]

IPT's convolutions (head 5x5 64->64, tail 3x3 64->256) and its transformer linears should run at
similar GFLOP/s on a CPU. Two failures have been seen: convolutions far below the matmuls
(MindSpore 2.10's oneDNN Conv2D on AVX-512 CPUs: 1 GFLOP/s), and matmuls held below the CPU's
speed (the AVX2 cap that fixes those convolutions slows oneDNN's matmuls 1.4-2.3x). This check
times both in one process per setting: as an IPT-base model runs, as ipt_tiny and exported files
run (src/conv.py chooses by model size: MindSpore's Conv2D, capped where needed), and MindSpore's
Conv2D with oneDNN uncapped. It names what ran (oneDNN's convolution implementation, or im2col +
its matmul) and exits 1 with a WARNING line when, in a setting the commands use, a convolution is
below --min_ratio of the linear, or IPT-base's linear below --min_linear of the best linear of any
setting. For scale it also times the same linear in numpy, whose BLAS (OpenBLAS in numpy's wheels)
is this machine's reference sgemm: MindSpore's matmuls (oneDNN) cannot be swapped for it, so the gap
is what a faster GEMM could still give IPT's forward, whose time is mostly these matmuls. About 30
s; no command runs it at start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.cpu_isa import ISA_VARIABLES, cpu_flags, cpu_name, isa_summary  # noqa: E402

# (name, batch, cin, cout, kernel) at 48x48, as in an IPT-base tile batch of 8
CONVS = [("head 5x5 64->64", 8, 64, 64, 5), ("tail 3x3 64->256", 8, 64, 256, 3)]
LINEAR = (8 * 256, 576, 2304)  # tokens x in x out: the encoder FFN of a batch of 8 tiles


def seconds_per_call(fn, seconds: float) -> float:
    """`fn` called once to warm up, then for at least `seconds` (once at least): seconds per call."""
    fn()
    start, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def worker(threads: int, seconds: float, native: bool) -> dict:
    """Time the convolutions and the linear in this process; GFLOP/s each."""
    from mindspore import Tensor, ops
    from src.config import load_config
    from src.conv import Conv2d, choose_formulation, formulation
    from src.flops import body_gflop
    from src.utils import setup_device
    cfg = load_config(None, {"threads": threads, "mode": "GRAPH", "device_target": "CPU"})  # IPT-base
    setup_device(cfg, native_convs=native)
    choose_formulation("CPU", body_gflop(cfg))  # as an IPT-base model chooses (no-op once native)
    rng = np.random.default_rng(0)

    def timed(fn) -> float:
        return seconds_per_call(lambda: fn().asnumpy(), seconds)

    out = {}
    for name, batch, cin, cout, k in CONVS:
        conv = Conv2d(cin, cout, k)
        x = Tensor(rng.standard_normal((batch, cin, 48, 48), dtype=np.float32))
        out[name] = 2.0 * batch * cin * cout * k * k * 48 * 48 / timed(lambda: conv(x)) / 1e9
    m, kdim, n = LINEAR
    a = Tensor(rng.standard_normal((m, kdim), dtype=np.float32))
    b = Tensor(rng.standard_normal((kdim, n), dtype=np.float32))
    matmul = ops.MatMul()
    out["linear 2048x576x2304"] = 2.0 * m * kdim * n / timed(lambda: matmul(a, b)) / 1e9
    out["oneDNN cap"] = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "none"
    out["formulation"] = formulation()
    return out


def blas_worker(seconds: float) -> dict:
    """The linear in numpy (its BLAS threads set by the caller's environment); GFLOP/s and the BLAS."""
    m, kdim, n = LINEAR
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, kdim), dtype=np.float32)
    b = rng.standard_normal((kdim, n), dtype=np.float32)
    per_call = seconds_per_call(lambda: np.matmul(a, b), seconds)
    blas = getattr(np.__config__, "CONFIG", {}).get("Build Dependencies", {}).get("blas", {})
    name = " ".join(str(blas.get(k, "")) for k in ("name", "version")).strip() or "unknown"
    return {"linear": 2.0 * m * kdim * n / per_call / 1e9, "blas": name}


def run_self(flags: list, env: dict, timeout: int) -> dict:
    """This script with hidden `flags` in a process of its own: its last stdout line (JSON), or an error."""
    cmd = [sys.executable, str(Path(__file__).resolve())] + flags
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_blas(args) -> dict:
    """numpy's sgemm in a process of its own, with as many BLAS threads as MindSpore gets."""
    threads = str(args.threads or os.cpu_count() or 1)
    env = {**os.environ, **{v: threads for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    return run_self(["--_blas", "--seconds", str(args.seconds)], env, timeout=300)


def kernels(env: dict, native: bool) -> str:
    """What one head convolution ran as, from oneDNN's own verbose output."""
    code = ("import sys; sys.path.insert(0, %r); import numpy as np; from mindspore import Tensor; "
            "from src.config import load_config; from src.utils import setup_device; "
            "setup_device(load_config(None, {'mode': 'GRAPH'}), native_convs=%r); "
            "from src.conv import Conv2d, choose_formulation; choose_formulation('CPU', 64.0); "
            "Conv2d(64, 64, 5)(Tensor(np.ones((1, 64, 48, 48), np.float32))).asnumpy()" % (str(ROOT), native))
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "ONEDNN_VERBOSE": "1"},
                          capture_output=True, text=True, timeout=300)
    found = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        for kind in ("convolution", "matmul"):
            if f"primitive,exec,cpu,{kind}," in line and kind not in found:
                found[kind] = line.split(f",{kind},", 1)[1].split(",", 1)[0]
    if "convolution" in found:
        return found["convolution"]
    if "matmul" in found:
        return "im2col + matmul " + found["matmul"]
    return "not oneDNN (no verbose line)"


def run_setting(label: str, env: dict, native: bool, args) -> dict:
    flags = ["--_worker", "--threads", str(args.threads), "--seconds", str(args.seconds)]
    result = run_self(flags + (["--_native"] if native else []), env, timeout=900)
    result["setting"] = label
    if "error" not in result:
        result["implementation"] = kernels(env, native)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per op")
    parser.add_argument("--min_ratio", type=float, default=0.1,
                        help="warn when a convolution runs below this fraction of the linear's GFLOP/s")
    parser.add_argument("--min_linear", type=float, default=0.7,
                        help="warn when the linear runs below this fraction of its best setting")
    parser.add_argument("--json", default="")
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_native", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_blas", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._blas:
        print(json.dumps(blas_worker(args.seconds)))
        return 0
    if args._worker:
        print(json.dumps(worker(args.threads, args.seconds, args._native)))
        return 0

    base = {k: v for k, v in os.environ.items() if k not in ISA_VARIABLES}
    settings = [("as IPT-base runs", {**os.environ}, False),
                ("as ipt_tiny and exported files run (Conv2D)", {**os.environ}, True),
                ("Conv2D, oneDNN uncapped", {**base, "ONEDNN_MAX_CPU_ISA": "DEFAULT"}, True)]
    print(f"CPU: {cpu_name()}, {isa_summary(cpu_flags())}, threads {args.threads or os.cpu_count()}")
    results = [run_setting(label, env, native, args) for label, env, native in settings]
    key = "linear 2048x576x2304"
    best_linear = max((r[key] for r in results if key in r), default=0.0)
    warn = False
    for r in results:
        label = r["setting"]
        if "error" in r:
            print(f"  {label}: error: {r['error']}")
            warn = True
            continue
        first = label == settings[0][0]
        used = label != settings[2][0]  # the settings commands run in
        linear = r[key]
        print(f"  {label} (cap: {r['oneDNN cap']}, convolution: {r['implementation']})")
        for name, *_ in CONVS:
            ratio = r[name] / linear
            flag = "" if ratio >= args.min_ratio else "   <-- far below the matmuls"
            print(f"    {name:18s} {r[name]:7.1f} GFLOP/s  ({ratio:.2f} of the linear){flag}")
            warn |= used and ratio < args.min_ratio
        slow = linear < args.min_linear * best_linear
        flag = f"   <-- {linear / best_linear:.2f} of the best setting" if slow else ""
        print(f"    {key:18s} {linear:7.1f} GFLOP/s{flag}")
        warn |= first and slow
    blas = run_blas(args)
    if "error" in blas:
        print(f"  reference, the linear in numpy: error: {blas['error']}")
    elif key in results[0]:
        print(f"  reference, the linear in numpy ({blas['blas']}): {blas['linear']:.1f} GFLOP/s; "
              f"MindSpore's as IPT-base runs: {results[0][key] / blas['linear']:.2f} of it")
    if warn:
        print("WARNING: as the commands run, convolutions or matmuls are far below what this CPU can do: "
              "every command will be slow here. See src/cpu_isa.py, try ONEDNN_MAX_CPU_ISA, and report the CPU.")
    else:
        print("ok: as the commands run, convolutions run near matmul speed and matmuls at full speed")
    if args.json:
        from src.utils import write_text_atomic
        write_text_atomic(args.json, json.dumps({"cpu": cpu_name(), "isa": isa_summary(cpu_flags()),
                                                 "results": results, "numpy_blas": blas}, indent=1))
    return 1 if warn else 0


if __name__ == "__main__":
    raise SystemExit(main())
