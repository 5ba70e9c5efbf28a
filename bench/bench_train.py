"""Training throughput and peak memory of the IPT train step (GRAPH_MODE, fp32).

    python bench/bench_train.py [--cases base:2,base:4,tiny:8] [--steps 3] [--device_target CPU]
                                [--threads 0] [--json out.json] [--graphs denoise_30,sr_x4]
                                [--separate_layer_graphs]

Each case (model:batch) runs in its own subprocess so its peak memory (VmHWM) is
its own. The model is the six-task pre-training model, stepping task sr_x2 (48x48 -> 96x96) with
the contrastive term on, on random data (the data pipeline is benched by bench/bench_data.py).
Reported: build time, compile time (first step minus a steady step), then samples/s and seconds/step over `--steps`
steps after one warm-up step. Do not go above batch 4 for IPT-base on a 24 GB machine: batch 8
peaks near 20 GB (see ../shared/notes/mindspore-2.10-cpu.md).

``--graphs TASKS`` also compiles the train step of each further task (one graph per task, as
pre-training does) and reports the resident memory after each (``rss_after_mb``): what one more
compiled task graph costs. On CPU that cost scales with the batch and lies outside MindSpore's
memory pool (docs/DEV_NOTES.md).
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
from typing import Dict, List, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.utils import peak_rss_mb, rss_mb  # noqa: E402

LOG = logging.getLogger("bench_train")
MODELS = {"base": None, "tiny": "ipt_tiny"}  # name -> config (None = default_config.yaml)
TASK = "sr_x2"


def run_case(model: str, batch: int, steps: int, device_target: str, threads: int,
             graphs: Sequence[str] = (), separate_layers: bool = False) -> Dict:
    """Build, compile and time the train step of one case (runs inside the child process)."""
    import mindspore as ms
    import src.ipt
    from src.config import load_config
    from src.ipt import IPT
    from src.tasks import get_task
    from src.trainer import Trainer
    from src.utils import setup_device

    cfg = load_config(MODELS[model], {"batch_size": batch, "device_target": device_target,
                                      "threads": threads, "mode": "GRAPH"})
    setup_device(cfg)
    ms.set_seed(0)
    if separate_layers:  # the A/B switch: each layer compiled on its own, as on GPU
        src.ipt.layers_share_one_graph = lambda *_: False
    start = time.perf_counter()
    net = IPT(cfg)
    trainer = Trainer(cfg, net)
    build = time.perf_counter() - start
    slot, scale = net.slot(TASK), get_task(TASK).scale
    rng = np.random.default_rng(0)
    lr = rng.uniform(0, 255, (batch, 3, 48, 48)).astype(np.float32)
    hr = rng.uniform(0, 255, (batch, 3, 48 * scale, 48 * scale)).astype(np.float32)
    start = time.perf_counter()
    trainer.train_step(slot, lr, hr, 5e-5)
    first_s = time.perf_counter() - start
    trainer.train_step(slot, lr, hr, 5e-5)  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step(slot, lr, hr, 5e-5)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    rss_after = {TASK: round(rss_mb() or 0.0, 1)}
    for task in graphs:  # one more compiled train graph each
        if task in rss_after:
            continue
        scale = get_task(task).scale
        hr_t = rng.uniform(0, 255, (batch, 3, 48 * scale, 48 * scale)).astype(np.float32)
        trainer.train_step(net.slot(task), lr, hr_t, 5e-5)
        rss_after[task] = round(rss_mb() or 0.0, 1)
    return {"rss_after_mb": rss_after, "model": model, "batch": batch, "params": net.num_parameters(), "build_s": round(build, 2),
            "first_step_s": round(first_s, 2), "compile_s": round(max(first_s - step_s, 0.0), 2),
            "step_s": round(step_s, 3),
            "samples_per_s": round(batch / step_s, 3), "peak_mb": round(peak_rss_mb() or 0.0, 1),
            "steps": steps, "device_target": device_target,
            "layer_graphs": "shared" if net.body.share_layer_graph else "separate"}  # as built


def spawn(model: str, batch: int, args) -> Dict:
    """One case in a fresh process; its result comes back through a temp JSON file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", f"{model}:{batch}", "--result", str(out),
               "--steps", str(args.steps), "--device_target", args.device_target,
               "--threads", str(args.threads), "--graphs", args.graphs]
        if args.separate_layer_graphs:
            cmd.append("--separate_layer_graphs")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            LOG.error("%s batch %d failed (rc %d): %s", model, batch, proc.returncode, tail)
            return {"model": model, "batch": batch, "error": tail, "rc": proc.returncode}
        return json.loads(out.read_text())


def parse_cases(text: str) -> List[tuple]:
    cases = []
    for item in text.split(","):
        model, _, batch = item.partition(":")
        if model not in MODELS or not batch.isdigit() or int(batch) < 2:
            raise SystemExit(f"error: bad case '{item}' (expected MODEL:BATCH with MODEL in "
                             f"{'/'.join(MODELS)} and BATCH >= 2)")
        cases.append((model, int(batch)))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="base:2,base:4,tiny:8", help="MODEL:BATCH,...")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--graphs", default="", help="further tasks whose train graphs are compiled, "
                                                     "RSS after each (e.g. denoise_30,sr_x4)")
    parser.add_argument("--separate_layer_graphs", action="store_true",
                        help="compile each transformer layer on its own instead of one graph per "
                             "layer kind (transformer.layers_share_one_graph): for A/B runs")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if args.child:
        (model, batch), = parse_cases(args.child)
        graphs = [t for t in args.graphs.split(",") if t]
        result = run_case(model, batch, args.steps, args.device_target, args.threads, graphs,
                          args.separate_layer_graphs)
        Path(args.result).write_text(json.dumps(result))
        return 0
    results = []
    for model, batch in parse_cases(args.cases):
        LOG.info("running %s batch %d ...", model, batch)
        results.append(spawn(model, batch, args))
        LOG.info("%s", results[-1])
    header = (f"{'model':<6} {'batch':>5} {'params':>12} {'compile s':>10} {'s/step':>8} {'samples/s':>10} "
              f"{'peak MiB':>9}")
    lines = [header, "-" * len(header)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['model']:<6} {r['batch']:>5}  failed: {r['error'][:60]}")
        else:
            lines.append(f"{r['model']:<6} {r['batch']:>5} {r['params']:>12,} {r['compile_s']:>10.1f} "
                         f"{r['step_s']:>8.2f} {r['samples_per_s']:>10.2f} {r['peak_mb']:>9.0f}")
    LOG.info("train step, task %s, %s, %d cores, GRAPH_MODE fp32:\n%s", TASK, args.device_target,
             os.cpu_count() or 1, "\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"task": TASK, "device_target": args.device_target,
                                               "cores": os.cpu_count(), "results": results}, indent=2))
        LOG.info("wrote %s", args.json)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
