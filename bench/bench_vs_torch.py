"""IPT-base in MindSpore (this project) against the official PyTorch model, same machine, same run.

    python bench/bench_vs_torch.py [--cases fwd:1,fwd:8,train:2,train:4] [--rounds 2] [--threads 0]
                                   [--json out.json]
    python bench/bench_vs_torch.py --cases fwd:1,mm:1,fwd:8,mm:8 --rounds 3

Needs the optional torch extra (`pip install torch==2.13.0`). The torch side is bench/torch_ipt.py,
the official network rebuilt from ../shared/ipt_reference/ARCHITECTURE.md (nn.MultiheadAttention,
unfold/fold: the official code's speed), checked against the official outputs by
tests/test_bench_vs_torch.py. Both sides: the single-task sr_x2 model (48x48 -> 96x96), fp32,
the same thread count, random weights and inputs.
- `fwd:B`: tile forward at batch B (MindSpore GRAPH_MODE eval; torch eval under no_grad).
- `mm:B`: the forward's transformer matmuls alone at batch B (src/flops.body_matmuls: 64.0 of
  IPT-base's 66.65 GFLOP per tile), one after another, each with its own weights as in the model,
  nothing else: the floor under a framework's forward. The same process also builds the forward
  and calls the two alternately, so the share of the forward spent in matmuls is measured pair by
  pair; the rest is norms, softmax, adds, data movement, convolutions and launches.
- `train:B`: a training step at batch B, L1 loss + Adam (our Trainer with the contrastive weight 0,
  GRAPH_MODE; torch eager). The official release has no training loop; L1 + Adam is its loss and
  optimiser options.
Every (framework, case) runs in its own process, so peak memory (VmHWM) is its own; the two
frameworks alternate case by case, `--rounds` times, and the medians are compared.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.cpu_isa import cpu_flags, cpu_name, isa_summary  # noqa: E402
from src.utils import peak_rss_mb  # noqa: E402

LOG = logging.getLogger("bench_vs_torch")
FRAMEWORKS = ("mindspore", "torch")


def random_pair(batch: int):
    """The seeded (LR, HR) float32 batch both benches step on: 48x48 inputs, 96x96 targets."""
    rng = np.random.default_rng(0)
    lr = rng.uniform(0, 255, (batch, 3, 48, 48)).astype(np.float32)
    hr = rng.uniform(0, 255, (batch, 3, 96, 96)).astype(np.float32)
    return lr, hr


# A forward is short, so it gets a longer warm-up and more timed calls: MindSpore's first 4-5 tile
# forwards after compiling run ~8 % slower than the rest (Zen 4, 2026-12-04: 0.46 -> 0.41 s), torch's
# do not; a restore runs hundreds of tiles. Both frameworks get the same counts.
FWD_WARMUP, FWD_CALLS = 6, 10


def _timed(fn, calls: int, warmup: int = 2) -> float:
    """Median seconds of `calls` calls after `warmup` warm-up calls (the first compiles)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _timed_pair(first, second, calls: int, warmup: int):
    """`first` and `second` called alternately: their median seconds, and the median of the
    per-pair ratio first / second (a ratio within a pair is immune to the machine's drift)."""
    for _ in range(warmup):
        first()
        second()
    a, b = [], []
    for _ in range(calls):
        for fn, times in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return float(np.median(a)), float(np.median(b)), float(np.median(np.array(a) / np.array(b)))


def _matmul_plan(cfg, batch: int):
    """The body's matmuls (src/flops.body_matmuls) at `batch` as (kind, a_shape, b_shape): 'linear'
    is x (B*L, in) times a weight (out, in) transposed, as nn.Dense and torch's Linear; 'scores' is
    q (h*B, L, d) times k (h*B, L, d) transposed; 'mix' is attn (h*B, L, L) times v (h*B, L, d)."""
    from src.flops import body_matmuls
    plan = []
    for _, kind, b, m, k, n in body_matmuls(cfg):
        if kind == "linear":
            plan.append((kind, (batch * m, k), (n, k)))
        elif kind == "scores":
            plan.append((kind, (b * batch, m, k), (b * batch, n, k)))
        else:
            plan.append((kind, (b * batch, m, k), (b * batch, k, n)))
    return plan


def _matmuls_mindspore(cfg, batch: int):
    """A graph of the body's matmuls alone (`_matmul_plan`), in order. Every linear has its own
    weight and every attention product its own second operand, so none is merged with another
    (common-subexpression elimination); every product is returned, so none is pruned (an
    `ops.depend` chain alone did not keep them), and the chain runs them one after another
    (ms.Profiler: never two at once). tests/test_bench_vs_torch.py checks the products."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops
    rng = np.random.default_rng(0)

    def param(shape, name):
        return Parameter(Tensor(rng.standard_normal(shape, dtype=np.float32) * 0.05), name=name,
                         requires_grad=False)

    class Matmuls(nn.Cell):
        def __init__(self, plan):
            super().__init__()
            firsts = sorted({a for _, a, _ in plan})
            self.kinds = tuple(kind for kind, _, _ in plan)
            self.first = tuple(firsts.index(a) for _, a, _ in plan)
            self.inputs = ms.ParameterTuple([param(a, f"x{i}") for i, a in enumerate(firsts)])
            self.seconds = ms.ParameterTuple([param(b, f"w{i}") for i, (_, _, b) in enumerate(plan)])
            self.linear = ops.MatMul(transpose_b=True)
            self.scores = ops.BatchMatMul(transpose_b=True)
            self.mix = ops.BatchMatMul()

        def construct(self):
            out = self.inputs[0]
            outs = ()
            for i in range(len(self.kinds)):
                x = ops.depend(self.inputs[self.first[i]], out)
                if self.kinds[i] == "linear":
                    out = self.linear(x, self.seconds[i])
                elif self.kinds[i] == "scores":
                    out = self.scores(x, self.seconds[i])
                else:
                    out = self.mix(x, self.seconds[i])
                outs += (out,)
            return outs

    return Matmuls(_matmul_plan(cfg, batch))


def _matmuls_torch(cfg, batch: int):
    """The same matmuls in torch, as the official model runs them (F.linear, bmm), under no_grad."""
    import torch
    gen = torch.Generator().manual_seed(0)
    plan = _matmul_plan(cfg, batch)
    firsts = {a: torch.randn(a, generator=gen) * 0.05 for _, a, _ in plan}
    seconds = [torch.randn(b, generator=gen) * 0.05 for _, _, b in plan]

    def run():
        with torch.no_grad():
            for (kind, a, _), w in zip(plan, seconds):
                x = firsts[a]
                if kind == "linear":
                    torch.nn.functional.linear(x, w)
                elif kind == "scores":
                    torch.bmm(x, w.transpose(1, 2))
                else:
                    torch.bmm(x, w)
    return run


def case_mindspore(kind: str, batch: int, threads: int, calls: int) -> float:
    import mindspore as ms
    from src.config import load_config
    from src.ipt import IPT
    from src.utils import setup_device
    cfg = load_config(None, {"tasks": ["sr_x2"], "threads": threads, "mode": "GRAPH", "device_target": "CPU",
                             "contrastive_weight": 0.0, "batch_size": batch})
    setup_device(cfg)
    ms.set_seed(0)
    net = IPT(cfg)
    lr, hr = random_pair(batch)
    if kind in ("fwd", "mm"):
        net.set_train(False)
        task_net, x = net.task_net("sr_x2"), ms.Tensor(lr)
        forward = lambda: task_net(x).asnumpy()  # noqa: E731
        if kind == "fwd":
            return _timed(forward, max(calls, FWD_CALLS), FWD_WARMUP)
        matmuls = _matmuls_mindspore(cfg, batch)
        return _timed_pair(lambda: matmuls()[-1].asnumpy(), forward, max(calls, FWD_CALLS), FWD_WARMUP)
    from src.trainer import Trainer
    trainer = Trainer(cfg, net)
    return _timed(lambda: trainer.train_step(0, lr, hr, 5e-5), calls)


def case_torch(kind: str, batch: int, threads: int, calls: int) -> float:
    import torch
    from bench.torch_ipt import TorchIPT
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = TorchIPT((2,))
    lr, hr = (torch.from_numpy(a) for a in random_pair(batch))
    if kind in ("fwd", "mm"):
        net.eval()

        def forward():
            with torch.no_grad():
                net(lr, 0)
        if kind == "fwd":
            return _timed(forward, max(calls, FWD_CALLS), FWD_WARMUP)
        from src.config import load_config
        return _timed_pair(_matmuls_torch(load_config(None, {}), batch), forward, max(calls, FWD_CALLS),
                           FWD_WARMUP)
    net.train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=5e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(net(lr, 0), hr)
        loss.backward()
        opt.step()
        loss.item()
    return _timed(step, calls)


def spawn(framework: str, kind: str, batch: int, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", f"{framework}:{kind}:{batch}",
           "--threads", str(args.threads), "--calls", str(args.calls)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"framework": framework, "kind": kind, "batch": batch, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_cases(text: str):
    cases = []
    for item in text.split(","):
        kind, _, batch = item.partition(":")
        if kind not in ("fwd", "mm", "train") or not batch.isdigit() or int(batch) < 1:
            raise SystemExit(f"error: bad case '{item}' (expected fwd:B, mm:B or train:B, B >= 1)")
        cases.append((kind, int(batch)))
    return cases


def summarise(runs: list, cases: list) -> list:
    rows = []
    for kind, batch in cases:
        row = {"case": f"{kind}:{batch}"}
        for fw in FRAMEWORKS:
            ok = [r for r in runs if (r["framework"], r["kind"], r["batch"]) == (fw, kind, batch)
                  and "error" not in r]
            row[fw] = {"seconds": float(np.median([r["seconds"] for r in ok])) if ok else None,
                       "peak_mb": max(r["peak_mb"] for r in ok) if ok else None,
                       "runs": [r["seconds"] for r in ok]}
            if kind == "mm":
                row[fw]["fraction"] = float(np.median([r["fraction"] for r in ok])) if ok else None
        ms_s, pt_s = row["mindspore"]["seconds"], row["torch"]["seconds"]
        row["time_ratio"] = ms_s / pt_s if ms_s and pt_s else None
        ms_m, pt_m = row["mindspore"]["peak_mb"], row["torch"]["peak_mb"]
        row["memory_ratio"] = ms_m / pt_m if ms_m and pt_m else None
        rows.append(row)
    return rows


def matmul_floor_lines(rows: list) -> list:
    """For every `mm:B` row: what share of each framework's forward its matmuls take (paired within
    one process), and what our matmuls alone take of torch's whole forward (if we ran nothing else)."""
    lines = []
    for row in rows:
        kind, _, batch = row["case"].partition(":")
        ours, theirs = row["mindspore"], row["torch"]
        measured = (ours.get("fraction"), theirs.get("fraction"), ours["seconds"], theirs["seconds"])
        if kind != "mm" or None in measured:
            continue
        torch_forward = theirs["seconds"] / theirs["fraction"]
        per_tile = ours["seconds"] / int(batch)
        lines.append(f"batch {batch}: the matmuls are {ours['fraction']:.2f} of our forward and "
                     f"{theirs['fraction']:.2f} of torch's; ours alone take {per_tile:.3f} s per tile, "
                     f"{ours['seconds'] / torch_forward:.2f} of torch's whole forward")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="fwd:1,fwd:8,train:2,train:4")
    parser.add_argument("--rounds", type=int, default=2, help="alternating repetitions of every case")
    parser.add_argument("--calls", type=int, default=3,
                        help=f"timed train steps per process after two warm-ups (forwards: at least "
                             f"{FWD_CALLS} after {FWD_WARMUP})")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both (0 = all cores)")
    parser.add_argument("--json", default="")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.threads = args.threads or os.cpu_count() or 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args._child:
        framework, kind, batch = args._child.split(":")
        run = case_mindspore if framework == "mindspore" else case_torch
        timed = run(kind, int(batch), args.threads, args.calls)
        out = {"framework": framework, "kind": kind, "batch": int(batch)}
        if kind == "mm":  # (matmuls, the forward beside them, the per-pair fraction)
            out.update(seconds=timed[0], forward_seconds=timed[1], fraction=timed[2])
        else:
            out["seconds"] = timed
        print(json.dumps({**out, "peak_mb": peak_rss_mb()}))
        return 0
    try:
        import torch
    except ImportError:
        raise SystemExit("error: bench_vs_torch needs torch (pip install torch==2.13.0)") from None
    cases = parse_cases(args.cases)
    machine = f"{cpu_name()}, {isa_summary(cpu_flags())}, {args.threads} threads"
    LOG.info("%s; mindspore vs torch %s", machine, torch.__version__)
    runs = []
    for rnd in range(args.rounds):
        for kind, batch in cases:
            order = FRAMEWORKS if rnd % 2 == 0 else FRAMEWORKS[::-1]
            for fw in order:
                runs.append(spawn(fw, kind, batch, args))
                r = runs[-1]
                LOG.info("round %d %s %s:%d: %s", rnd + 1, fw, kind, batch,
                         r.get("error") or f"{r['seconds']:.3f} s, peak {r['peak_mb']:.0f} MB")
    rows = summarise(runs, cases)
    print(f"\nIPT-base sr_x2, fp32, {machine}; MindSpore GRAPH_MODE vs torch {torch.__version__}")
    print(f"{'case':10s} {'ours s':>8s} {'torch s':>8s} {'ratio':>6s} {'ours MB':>8s} {'torch MB':>8s} {'mem':>5s}")
    for row in rows:
        ms_r, pt_r = row["mindspore"], row["torch"]
        fmt = lambda v, s: "-" if v is None else format(v, s)  # noqa: E731
        per = 1 if row["case"].startswith("train") else int(row["case"].split(":")[1])
        print(f"{row['case']:10s} {fmt(ms_r['seconds'] and ms_r['seconds'] / per, '8.3f')} "
              f"{fmt(pt_r['seconds'] and pt_r['seconds'] / per, '8.3f')} {fmt(row['time_ratio'], '6.2f')} "
              f"{fmt(ms_r['peak_mb'], '8.0f')} {fmt(pt_r['peak_mb'], '8.0f')} {fmt(row['memory_ratio'], '5.2f')}")
    print("(fwd, mm: seconds per tile; train: seconds per step; ratio = ours / torch, below 1 = we are faster)")
    for line in matmul_floor_lines(rows):
        print(line)
    if args.json:
        from src.utils import write_text_atomic
        write_text_atomic(args.json, json.dumps({"machine": machine, "torch": torch.__version__,
                                                 "rows": rows, "runs": runs}, indent=1))
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
