"""Our CPU forms of IPT's kernels against MindSpore's plain ones, in one process, call by call.

    python bench/bench_cpu_forms.py [--forms layer_norm,conv_taps,im2col] [--cases fwd:1,fwd:8,train:2]
                                    [--model base] [--calls 20] [--threads 0] [--json out.json]

- `layer_norm`: `common._LayerNormOp`'s forward (row statistics as matmuls) against MindSpore's
  LayerNorm kernel (the backward is ours in both).
- `conv_taps`: im2col with each convolution's `conv.tap_layout` against every convolution taking
  all k*k input views (the form before 2026-12-04). Only where im2col runs (an AVX-512 x86 CPU and
  a large body, src/conv.py); elsewhere both sides are the same.
- `all`: both at once.
- `im2col`: MindSpore's Conv2D against im2col (`src/conv.py`), both under the process's oneDNN
  setting, whatever formulation this CPU would choose: on an AVX2 CPU, whether im2col would pay
  there too (IPT-base on AVX-512 runs oneDNN uncapped, so there the plain side is its slow path).
- `backwards`: the CPU-tuned norms and softmaxes, forward and backward (`common.cpu_backwards`:
  `_LayerNormOp`, `transformer._LastAxisSoftmax`) against MindSpore's LayerNorm and Softmax ops
  with their own LayerNormGrad and SoftmaxGrad kernels, as GPU and Ascend run them.

Both models are built side by side in the same process (same seeds, so the same weights) and
called alternately, A (plain) then B (ours), so the machine's drift hits both alike: on a noisy
2-core VM the per-pair ratio B/A is steadier than timings of separate runs. Reported: the medians
and the median of the per-pair ratios (below 1: our form is faster), and the largest output
difference. Memory is not compared here (both models share a process): bench/bench_vs_torch.py and
bench/bench_train.py give peaks.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_vs_torch import parse_cases, random_pair  # noqa: E402
from src.cpu_isa import cpu_flags, cpu_name, isa_summary  # noqa: E402

LOG = logging.getLogger("bench_cpu_forms")
FORMS = ("layer_norm", "conv_taps", "all", "backwards", "im2col")
MODELS = {"base": None, "tiny": "ipt_tiny"}


@contextlib.contextmanager
def plain_forms(form: str):
    """Models built inside take MindSpore's plain form of `form` (and of both for 'all')."""
    import src.common as common
    import src.conv as conv
    import src.transformer as transformer
    from mindspore import ops
    saved = common._LayerNormOp.construct, common._LayerNormOp.__init__, conv.tap_layout
    saved_formulation = conv.formulation()
    saved_backwards = common.cpu_backwards, transformer.cpu_backwards
    if form == "backwards":
        common.cpu_backwards = transformer.cpu_backwards = lambda: False
    if form in ("layer_norm", "all"):
        init = common._LayerNormOp.__init__

        def plain_init(self, eps):
            init(self, eps)
            self.plain = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

        def plain_construct(self, x, gamma, beta):  # a def: MindSpore compiles construct from source
            return self.plain(x, gamma, beta)
        common._LayerNormOp.__init__ = plain_init
        common._LayerNormOp.construct = plain_construct
    if form in ("conv_taps", "all"):
        conv.tap_layout = lambda in_channels, out_channels, kernel: "input"
    if form == "im2col":
        conv.set_formulation(conv.NATIVE)
    try:
        yield
    finally:
        common._LayerNormOp.construct, common._LayerNormOp.__init__, conv.tap_layout = saved
        conv.set_formulation(saved_formulation)
        common.cpu_backwards, transformer.cpu_backwards = saved_backwards


@contextlib.contextmanager
def our_forms(form: str):
    """Models built inside take the project's form of `form`: im2col forced for 'im2col' (this CPU
    may not choose it), the process's own choice otherwise."""
    import src.conv as conv
    saved = conv.formulation()
    if form == "im2col":
        conv.set_formulation(conv.IM2COL)
    try:
        yield
    finally:
        conv.set_formulation(saved)


def build_pair(cfg, kind: str, form: str):
    """(plain, ours): two callables of one step each (a forward or a train step) and their inputs."""
    import mindspore as ms
    from src.ipt import IPT
    from src.trainer import Trainer
    lr, hr = random_pair(cfg.batch_size)
    pair = []
    for plain in (True, False):
        with plain_forms(form) if plain else our_forms(form):
            ms.set_seed(0)
            net = IPT(cfg)
            if kind == "fwd":
                net.set_train(False)
                task_net, x = net.task_net("sr_x2"), ms.Tensor(lr)
                pair.append(lambda t=task_net, x=x: t(x).asnumpy())
            else:
                trainer = Trainer(cfg, net)
                pair.append(lambda t=trainer: t.train_step(0, lr, hr, 5e-5))
            pair[-1]()  # compiles now, while the patched construct is the class's
    return pair


def alternate(calls: dict, repeats: int) -> dict:
    """{name: seconds of each call}: the callables called in turn, `repeats` rounds, so the machine's
    drift hits all alike."""
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def pair_ratios(base: list, other: list) -> dict:
    """The median and quartiles of other / base, call pair by call pair (below 1: `other` is faster)."""
    ratios = np.array(other) / np.array(base)
    return {"ratio": float(np.median(ratios)), "ratio_quartiles": [float(q) for q in np.percentile(ratios, [25, 75])]}


def run_case(model: str, kind: str, batch: int, form: str, calls: int, threads: int) -> dict:
    from src.config import load_config
    from src.utils import setup_device
    cfg = load_config(MODELS[model], {"tasks": ["sr_x2"], "threads": threads, "mode": "GRAPH",
                                      "device_target": "CPU", "contrastive_weight": 0.0, "batch_size": batch})
    setup_device(cfg)
    plain, ours = build_pair(cfg, kind, form)
    outputs = [plain(), ours()]  # one more warm call each (build_pair compiled them)
    diff = float(np.abs(np.asarray(outputs[0]) - np.asarray(outputs[1])).max()) if kind == "fwd" else None
    times = alternate({"plain": plain, "ours": ours}, calls)
    per = batch if kind == "fwd" else 1
    return {"form": form, "model": model, "case": f"{kind}:{batch}", "plain_s": float(np.median(times["plain"])) / per,
            "ours_s": float(np.median(times["ours"])) / per, **pair_ratios(times["plain"], times["ours"]),
            "max_output_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--forms", default="all", help=f"comma-separated: {', '.join(FORMS)}")
    parser.add_argument("--cases", default="fwd:1,fwd:8,train:2")
    parser.add_argument("--model", default="base", choices=sorted(MODELS))
    parser.add_argument("--calls", type=int, default=20, help="alternating pairs of calls per case")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    threads = args.threads or os.cpu_count() or 1
    forms = [f for f in args.forms.split(",") if f]
    for form in forms:
        if form not in FORMS:
            raise SystemExit(f"error: unknown form '{form}' (one of {', '.join(FORMS)})")
    cases = parse_cases(args.cases)
    if len(forms) * len(cases) > 1:  # one pair of models per process: a fresh process per row
        import subprocess
        rows = []
        for form in forms:
            for kind, batch in cases:
                cmd = [sys.executable, __file__, "--forms", form, "--cases", f"{kind}:{batch}", "--model",
                       args.model, "--calls", str(args.calls), "--threads", str(threads), "--json", "-"]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"error: {form} {kind}:{batch} failed: "
                                     f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                LOG.info("%s %s:%d done", form, kind, batch)
    else:
        rows = [run_case(args.model, cases[0][0], cases[0][1], forms[0], args.calls, threads)]
        if args.json == "-":
            print(json.dumps(rows[0]))
            return
    machine = f"{cpu_name()}, {isa_summary(cpu_flags())}, {threads} threads"
    print(f"\nIPT-{args.model} sr_x2, fp32, GRAPH_MODE, {machine}; {args.calls} alternating pairs per row")
    print(f"{'form':12s} {'case':8s} {'plain s':>8s} {'ours s':>8s} {'ours/plain':>11s} {'quartiles':>13s}  max diff")
    for r in rows:
        q = r["ratio_quartiles"]
        diff = "" if r["max_output_diff"] is None else f"{r['max_output_diff']:.2g}"
        print(f"{r['form']:12s} {r['case']:8s} {r['plain_s']:8.3f} {r['ours_s']:8.3f} {r['ratio']:11.3f} "
              f"{q[0]:6.3f}-{q[1]:.3f}  {diff}")
    print("(fwd: seconds per tile; train: seconds per step; the ratio is the median of per-pair ratios)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
