"""IPT tile-forward speed against the machine's own limit: fp32 matmul throughput, same run.

    python bench/bench_model.py [--models base,tiny] [--batches 1,8] [--reps 5]
                                [--matmul_sizes 2048,4096] [--blocks] [--device_target CPU]
                                [--threads 0] [--json out.json]

Every (model, batch) runs in its own subprocess (GRAPH_MODE, eval mode) so its peak memory
(VmHWM) is its own. Inside it, each repetition times the large square matmuls and then the tile
forward back to back: the machine is shared, so the ratio model/matmul is taken per repetition
and the median kept. FLOPs are counted analytically (a multiply-add = 2 FLOP; convolutions,
linears and the two attention matmuls; bias, norm, softmax and activations are not counted).
`--blocks` also times the forward split into head / tokens / encoder / decoder / mlp_head / tail.
A last subprocess checks that each task compiles once per process: a two-task model (default
IPT-base, batch 1, sr_x2 + denoise_30) runs task A three times, task B once (its first call
compiles), A twice and B twice: only the first call of each task is slow.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import Config, load_config  # noqa: E402
from src.flops import tile_flops  # noqa: E402
from src.tasks import get_task  # noqa: E402
from src.utils import peak_rss_mb  # noqa: E402

LOG = logging.getLogger("bench_model")
MODELS = {"base": None, "tiny": "ipt_tiny"}  # name -> config (None = default_config.yaml)


# ----------------------------------------------------------------------------- helpers
def device_peak_mb(target: str) -> Optional[float]:
    """The MindSpore device allocator's peak (GPU/Ascend only; CPU memory is VmHWM)."""
    if target == "CPU":
        return None
    try:
        import mindspore as ms
        return ms.runtime.max_memory_allocated() / 2 ** 20
    except Exception:  # noqa: BLE001  (an optional figure, never fatal)
        return None


def _device_cfg(args, model: str = "base", extra: Optional[dict] = None) -> Config:
    over = {"device_target": args.device_target, "device_id": args.device_id, "threads": args.threads,
            "mode": "GRAPH", "tasks": ["sr_x2"]}
    over.update(extra or {})
    return load_config(MODELS.get(model, model), over)


def _sync(target: str) -> None:
    if target != "CPU":  # CPU kernels return finished tensors; elsewhere wait for the device
        import mindspore as ms
        ms.runtime.synchronize()


def _timed_calls(fn: Callable[[], None], seconds: float, max_calls: int = 1000) -> float:
    """Mean seconds per call over at least one call and about `seconds` of wall time."""
    start, calls = time.perf_counter(), 0
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or calls >= max_calls:
            return elapsed / calls


class _Matmul:
    """fp32 square matmul on the device: the throughput the transformer's linears aim at."""

    def __init__(self, sizes: List[int], target: str) -> None:
        import mindspore as ms
        from mindspore import nn, ops

        class MM(nn.Cell):
            def __init__(self):
                super().__init__()
                self.mm = ops.MatMul()

            def construct(self, a, b):
                return self.mm(a, b)

        rng = np.random.default_rng(0)
        self.net, self.target = MM(), target
        self.inputs = {n: (ms.Tensor(rng.standard_normal((n, n), np.float32)),
                           ms.Tensor(rng.standard_normal((n, n), np.float32))) for n in sizes}
        for n in sizes:  # compile and warm up
            self.net(*self.inputs[n]).asnumpy()

    def gflops(self, n: int, seconds: float) -> float:
        def call():
            self.net(*self.inputs[n])
            _sync(self.target)
        return 2.0 * n ** 3 / _timed_calls(call, seconds) / 1e9


# ----------------------------------------------------------------------------- block cells
def _block_cells(model, slot: int):
    """The forward split at block boundaries, sharing the model's parameters (default options)."""
    from mindspore import nn
    body = model.body

    class Head(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.model = model

        def construct(self, x):
            return self.model.head[slot](self.model.sub_mean(x))

    class Tokens(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.body = body

        def construct(self, x):
            t = self.body.to_tokens(x)
            t = self.body.linear_encoding(t) + t
            return t + self.body.position_encoding.pe.weight.reshape(1, self.body.num_tokens, self.body.dim)

    class Encoder(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.body = body

        def construct(self, t):
            return self.body._encode(t, None)  # pylint: disable=protected-access

    class Decoder(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.body = body

        def construct(self, t):
            q = self.body.query_embed.weight[slot].reshape(1, self.body.num_tokens, self.body.dim)
            return self.body._decode(t, None, q)  # pylint: disable=protected-access

    class MlpHead(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.body = body

        def construct(self, t):
            return self.body.from_tokens(self.body.mlp_head(t) + t)

    class Tail(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.model = model

        def construct(self, res, x):
            return self.model.add_mean(self.model.tail[slot](res + x))

    return Head(), Tokens(), Encoder(), Decoder(), MlpHead(), Tail()


# ----------------------------------------------------------------------------- workers
def worker_forward(args) -> dict:
    """One (model, batch): compile time, steady forward time, GFLOP/s vs matmul, peak memory."""
    import mindspore as ms
    from src.ipt import IPT
    from src.utils import setup_device
    cfg = _device_cfg(args, args.model)
    setup_device(cfg)
    task = get_task("sr_x2")
    flops = tile_flops(cfg, task.scale)
    tile_gflop = sum(flops.values()) / 1e9
    ms.set_seed(0)
    model = IPT(cfg)
    model.set_train(False)
    net = model.task_net(task.name)
    x = ms.Tensor(np.random.default_rng(0).uniform(0, 255, (args.batch, 3, 48, 48)).astype(np.float32))

    t0 = time.perf_counter()
    net(x).asnumpy()
    first = time.perf_counter() - t0
    steady0 = _timed_calls(lambda: net(x).asnumpy(), 0.0)
    peak = peak_rss_mb()  # before any matmul buffer: the model's own peak

    mm = _Matmul(args.matmul_sizes, args.device_target)
    block_calls = _block_calls(model, x) if args.blocks else {}
    reps = []
    for _ in range(args.reps):  # matmul, forward and blocks back to back: the same machine load
        mm_g = {n: mm.gflops(n, args.mm_seconds) for n in args.matmul_sizes}
        sec = _timed_calls(lambda: net(x).asnumpy(), args.min_seconds)
        g = args.batch * tile_gflop / sec
        reps.append({"matmul_gflops": mm_g, "seconds": sec, "gflops": g, "ratio": g / max(mm_g.values()),
                     "blocks": {k: _timed_calls(fn, args.min_seconds / len(block_calls))
                                for k, fn in block_calls.items()}})
        LOG.info("  %s b%d: %.3f s  %.1f GFLOP/s  matmul %s GFLOP/s  ratio %.2f", args.model, args.batch,
                 sec, g, " / ".join(f"{v:.1f}" for v in mm_g.values()), reps[-1]["ratio"])
    sec = float(np.median([r["seconds"] for r in reps]))
    return {
        "model": args.model, "batch": args.batch, "tile_gflop": tile_gflop,
        "flops_by_block": flops, "params": model.num_parameters(),
        "first_call_s": first, "compile_s": first - min(sec, steady0),
        "seconds": sec, "seconds_per_tile": sec / args.batch,
        "gflops": float(np.median([r["gflops"] for r in reps])),
        "matmul_gflops": {str(n): float(np.median([r["matmul_gflops"][n] for r in reps]))
                          for n in args.matmul_sizes},
        "matmul_limit": float(np.median([max(r["matmul_gflops"].values()) for r in reps])),
        "ratio": float(np.median([r["ratio"] for r in reps])),
        "peak_rss_mb": peak, "device_peak_mb": device_peak_mb(args.device_target),
        "blocks": {k: float(np.median([r["blocks"][k] for r in reps])) for k in block_calls} or None,
        "reps": reps,
    }


def _block_calls(model, x) -> Dict[str, Callable[[], None]]:
    """One call per block on realistic inputs (each block compiled as its own graph)."""
    head, tokens, enc, dec, mlp, tail = _block_cells(model, 0)
    feats = head(x)
    toks = tokens(feats)
    mem = enc(toks)
    out = dec(mem)
    res = mlp(out)
    calls = {"head": lambda: head(x), "tokens": lambda: tokens(feats), "encoder": lambda: enc(toks),
             "decoder": lambda: dec(mem), "mlp_head": lambda: mlp(out), "tail": lambda: tail(res, feats)}
    for fn in calls.values():
        fn().asnumpy()
    return {k: (lambda fn=fn: fn().asnumpy()) for k, fn in calls.items()}


def worker_tasks(args) -> dict:
    """Two tasks in one model: each task's first call compiles, later calls are flat."""
    import mindspore as ms
    from src.ipt import IPT
    from src.utils import setup_device
    tasks = args.compile_tasks
    cfg = _device_cfg(args, args.model, {"tasks": tasks})
    setup_device(cfg)
    model = IPT(cfg)
    model.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).uniform(0, 255, (args.batch, 3, 48, 48)).astype(np.float32))
    a, b = tasks
    calls = []
    for name in [a, a, a, b, a, a, b, b]:
        t0 = time.perf_counter()
        model.task_net(name)(x).asnumpy()
        calls.append({"task": name, "seconds": time.perf_counter() - t0})
    return {"model": args.model, "batch": args.batch, "calls": calls, "peak_rss_mb": peak_rss_mb()}


# ----------------------------------------------------------------------------- driver
def _run_worker(kind: str, model: str, batch: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", kind, "--_out", str(out),
               "--model", model, "--batch", str(batch), "--reps", str(args.reps),
               "--matmul_sizes", ",".join(map(str, args.matmul_sizes)),
               "--mm_seconds", str(args.mm_seconds), "--min_seconds", str(args.min_seconds),
               "--compile_tasks", ",".join(args.compile_tasks),
               "--device_target", args.device_target, "--device_id", str(args.device_id),
               "--threads", str(args.threads)] + (["--blocks"] if args.blocks else [])
        LOG.info("running %s %s batch %d", kind, model, batch)
        proc = subprocess.run(cmd, cwd=ROOT, check=False)
        if proc.returncode != 0 or not out.exists():
            return {"model": model, "batch": batch, "error": f"worker exited with {proc.returncode}"}
        return json.loads(out.read_text())


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_report(result: dict) -> None:
    print(f"\nIPT tile forward, GRAPH_MODE eval, {result['device_target']}, threads {result['threads']}")
    print("FLOP per 48x48 tile (sr_x2, analytic):")
    for name, fl in result["flops"].items():
        parts = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in fl.items())
        print(f"  {name:5s} {sum(fl.values()) / 1e9:7.2f} GFLOP  ({parts})")
    if "base" in result["flops"]:
        total = sum(result["flops"]["base"].values()) / 1e9
        print(f"  check: IPT-base {total:.2f} vs 66.6 GFLOP published ({'ok' if abs(total - 66.6) < 0.5 else 'MISMATCH'})")
    sizes = result["matmul_sizes"]
    head = (f"{'model':5s} {'batch':>5s} {'compile s':>9s} {'s/call':>8s} {'ms/tile':>8s} {'GFLOP/s':>8s} "
            + " ".join(f"{'mm' + str(n):>7s}" for n in sizes) + f" {'ratio':>6s} {'peak MB':>8s}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in result["forward"]:
        if "error" in r:
            print(f"{r['model']:5s} {r['batch']:5d} {r['error']}")
            continue
        mm = " ".join(f"{r['matmul_gflops'][str(n)]:7.1f}" for n in sizes)
        print(f"{r['model']:5s} {r['batch']:5d} {r['compile_s']:9.1f} {r['seconds']:8.3f} "
              f"{1e3 * r['seconds_per_tile']:8.1f} {r['gflops']:8.1f} {mm} {r['ratio']:6.2f} "
              f"{_fmt(r['peak_rss_mb'], '8.0f')}")
    print("(mmN: fp32 NxN matmul GFLOP/s measured in the same process; ratio = model GFLOP/s / best "
          "matmul, per repetition, median)")
    for r in result["forward"]:
        if r.get("blocks"):
            tot = sum(r["blocks"].values())
            fl = r["flops_by_block"]
            print(f"\nblocks, {r['model']} batch {r['batch']} (sum {tot:.3f} s vs forward {r['seconds']:.3f} s):")
            for k, v in r["blocks"].items():
                print(f"  {k:9s} {v:8.3f} s  {100 * v / tot:5.1f}%  {r['batch'] * fl[k] / v / 1e9:7.1f} GFLOP/s")
    for t in result.get("compile_once", []):
        if "error" in t:
            print(f"\ncompile once per task: {t['error']}")
            continue
        seq = ", ".join(f"{c['task']} {c['seconds']:.2f}" for c in t["calls"])
        print(f"\ncompile once per task ({t['model']}, batch {t['batch']}), call sequence in seconds:\n  {seq}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="base,tiny", help="base, tiny or config names, comma-separated")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--reps", type=int, default=5, help="interleaved matmul/model repetitions")
    parser.add_argument("--matmul_sizes", default="2048,4096")
    parser.add_argument("--mm_seconds", type=float, default=1.0, help="timing window per matmul size")
    parser.add_argument("--min_seconds", type=float, default=1.0, help="timing window per forward rep")
    parser.add_argument("--blocks", action="store_true", help="also time the forward block by block")
    parser.add_argument("--compile_tasks", default="sr_x2,denoise_30",
                        help="the two tasks of the compile-once check ('' to skip)")
    parser.add_argument("--compile_model", default="base")
    parser.add_argument("--compile_batch", type=int, default=1)
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--device_id", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores")
    parser.add_argument("--json", default="", help="write the results to this file")
    parser.add_argument("--_worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="base", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.matmul_sizes = [int(s) for s in str(args.matmul_sizes).split(",") if s]
    args.compile_tasks = [s for s in str(args.compile_tasks).split(",") if s]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if args._worker:
        result = worker_forward(args) if args._worker == "forward" else worker_tasks(args)
        Path(args._out).write_text(json.dumps(result))
        return result

    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    result = {
        "device_target": args.device_target, "threads": args.threads or os.cpu_count(),
        "matmul_sizes": args.matmul_sizes, "reps": args.reps,
        "flops": {m: tile_flops(_device_cfg(args, m), 2) for m in models},
        "forward": [_run_worker("forward", m, b, args) for m in models for b in batches],
        "compile_once": [],
    }
    if len(args.compile_tasks) == 2:
        result["compile_once"].append(_run_worker("tasks", args.compile_model, args.compile_batch, args))
    print_report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
