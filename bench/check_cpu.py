"""Health check for a new machine: do MindSpore's CPU convolutions run near its matmul speed?

    python bench/check_cpu.py [--threads 0] [--seconds 1] [--json out.json]

IPT's convolutions (head 5x5 64->64, tail 3x3 64->256) and its transformer linears should run at
similar GFLOP/s on a CPU. When convolutions fall far below the matmuls (MindSpore 2.10 on AVX-512
CPUs without the oneDNN cap: 1 GFLOP/s against 150), every command is several times slower. This
check times both in one process, as the commands run (cap decided by src/cpu_isa.py) and with
oneDNN uncapped (`ONEDNN_MAX_CPU_ISA=DEFAULT`), names the convolution implementation oneDNN chose,
and exits 1 with a WARNING line when a convolution is below --min_ratio of the matmul speed.
About 20 s; it is not run at start-up of any command.
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


def worker(threads: int, seconds: float) -> dict:
    """Time the convolutions and the linear in this process; GFLOP/s each."""
    import mindspore as ms
    from mindspore import Tensor, nn, ops
    from src.config import load_config
    from src.utils import setup_device
    setup_device(load_config(None, {"threads": threads, "mode": "GRAPH", "device_target": "CPU"}))
    rng = np.random.default_rng(0)

    def timed(fn) -> float:
        fn().asnumpy()
        start, calls = time.perf_counter(), 0
        while calls == 0 or time.perf_counter() - start < seconds:
            fn().asnumpy()
            calls += 1
        return (time.perf_counter() - start) / calls

    out = {}
    for name, batch, cin, cout, k in CONVS:
        conv = nn.Conv2d(cin, cout, k, pad_mode="same", has_bias=True)
        x = Tensor(rng.standard_normal((batch, cin, 48, 48), dtype=np.float32))
        out[name] = 2.0 * batch * cin * cout * k * k * 48 * 48 / timed(lambda: conv(x)) / 1e9
    m, kdim, n = LINEAR
    a = Tensor(rng.standard_normal((m, kdim), dtype=np.float32))
    b = Tensor(rng.standard_normal((kdim, n), dtype=np.float32))
    matmul = ops.MatMul()
    out["linear 2048x576x2304"] = 2.0 * m * kdim * n / timed(lambda: matmul(a, b)) / 1e9
    out["oneDNN cap"] = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "none"
    return out


def conv_implementation(env: dict) -> str:
    """The oneDNN implementation of one head convolution, from oneDNN's own verbose output."""
    code = ("import sys; sys.path.insert(0, %r); import numpy as np; from mindspore import Tensor, nn; "
            "from src.config import load_config; from src.utils import setup_device; "
            "setup_device(load_config(None, {'mode': 'GRAPH'})); "
            "nn.Conv2d(64, 64, 5, pad_mode='same', has_bias=True)(Tensor(np.ones((1, 64, 48, 48), np.float32)))"
            % str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "ONEDNN_VERBOSE": "1"},
                          capture_output=True, text=True, timeout=300)
    for line in (proc.stdout + proc.stderr).splitlines():
        if ",convolution," in line and "primitive,exec" in line:
            return line.split(",convolution,", 1)[1].split(",", 1)[0]
    return "not oneDNN (no verbose line)"


def run_setting(label: str, env: dict, args) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", "--threads",
                           str(args.threads), "--seconds", str(args.seconds)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"setting": label, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(setting=label, implementation=conv_implementation(env))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per op")
    parser.add_argument("--min_ratio", type=float, default=0.25,
                        help="warn when a convolution runs below this fraction of the linear's GFLOP/s")
    parser.add_argument("--json", default="")
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        print(json.dumps(worker(args.threads, args.seconds)))
        return 0

    base = {k: v for k, v in os.environ.items() if k not in ISA_VARIABLES}
    settings = [("as the commands run", {**os.environ}), ("oneDNN uncapped", {**base, "ONEDNN_MAX_CPU_ISA": "DEFAULT"})]
    print(f"CPU: {cpu_name()}, {isa_summary(cpu_flags())}, threads {args.threads or os.cpu_count()}")
    results, warn = [], False
    for label, env in settings:
        r = run_setting(label, env, args)
        results.append(r)
        if "error" in r:
            print(f"  {label}: error: {r['error']}")
            warn = True
            continue
        linear = r["linear 2048x576x2304"]
        print(f"  {label} (cap: {r['oneDNN cap']}, convolution: {r['implementation']})")
        for name, *_ in CONVS:
            ratio = r[name] / linear
            flag = "" if ratio >= args.min_ratio else "   <-- far below the matmuls"
            print(f"    {name:18s} {r[name]:7.1f} GFLOP/s  ({ratio:.2f} of the linear){flag}")
            warn |= label == settings[0][0] and ratio < args.min_ratio
        print(f"    {'linear 2048x576x2304':18s} {linear:7.1f} GFLOP/s")
    if warn:
        print("WARNING: convolutions run far below the matmuls as the commands run: every command will be "
              "slow here. Try ONEDNN_MAX_CPU_ISA=AVX2 (see src/cpu_isa.py) and report the CPU.")
    else:
        print("ok: convolutions run near matmul speed as the commands run")
    if args.json:
        from src.utils import write_text_atomic
        write_text_atomic(args.json, json.dumps({"cpu": cpu_name(), "isa": isa_summary(cpu_flags()),
                                                 "results": results}, indent=1))
    return 1 if warn else 0


if __name__ == "__main__":
    raise SystemExit(main())
