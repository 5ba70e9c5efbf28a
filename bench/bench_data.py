"""Training-data throughput (samples/s): the source called directly vs GeneratorDataset workers.

    python bench/bench_data.py [--batch 8] [--seconds 3] [--rounds 2] [--json out.json]

Pretrain mode (all six tasks mixed) from ../shared/datasets/train. "0 workers" calls the
source in this process; 1/2 workers go through GeneratorDataset, 2 as threads and as processes.
Image decoding happens once, before timing (reported separately as load_s).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import load_config  # noqa: E402
from src.dataset import build_train_source, create_train_dataset  # noqa: E402
from src.tasks import PRETRAIN_ORDER  # noqa: E402

LOG = logging.getLogger("bench_data")
TRAIN = ROOT.parent / "shared" / "datasets" / "train"


def _time_direct(source, seconds: float) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    steps = 0
    while time.perf_counter() - start < seconds and steps < len(source):
        source[steps]
        steps += 1
    elapsed = time.perf_counter() - start
    return {"steps": steps, "seconds": elapsed, "cpu_s": time.process_time() - cpu, "startup_s": 0.0}


def _time_dataset(cfg, source, seconds: float, processes: bool) -> dict:
    t0 = time.perf_counter()
    dataset = create_train_dataset(cfg, PRETRAIN_ORDER, processes=processes, source=source)
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(iterator)  # worker start-up and first batch are not throughput
    start, cpu = time.perf_counter(), time.process_time()
    steps = 0
    for _ in iterator:
        steps += 1
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu  # this process's threads; worker processes are not counted
    iterator.stop()
    return {"steps": steps, "seconds": elapsed, "cpu_s": None if processes else cpu,
            "startup_s": start - t0}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per setting")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats; best is kept")
    parser.add_argument("--json", default="", help="write the results to this file")
    parser.add_argument("--device_target", default="CPU", help="accepted for uniformity; unused")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cfg = load_config("ipt_tiny", overrides={
        "train_path": str(TRAIN), "batch_size": args.batch, "steps": 100000, "train_mode": "pretrain"})
    t0 = time.perf_counter()
    source = build_train_source(cfg, PRETRAIN_ORDER)
    load_s = time.perf_counter() - t0

    # MindSpore runs a single worker in-thread even with python_multiprocessing, so
    # "1 worker" has one row. Rounds are interleaved and the best kept: the 2 cores are shared.
    settings = [("0 workers (direct)", 0, False), ("1 worker", 1, False),
                ("2 worker threads", 2, False), ("2 worker processes", 2, True)]
    cfg.workers = 1
    _time_dataset(cfg, source, 0.2, False)  # pay MindSpore's one-off dataset start-up here
    best = {}
    for _ in range(args.rounds):
        for label, workers, processes in settings:
            cfg.workers = workers
            if workers == 0:
                res = _time_direct(source, args.seconds)
            else:
                res = _time_dataset(cfg, source, args.seconds, processes)
            res.update(label=label, workers=workers, processes=processes,
                       samples_per_s=res["steps"] * args.batch / res["seconds"],
                       samples_per_cpu_s=(res["steps"] * args.batch / res["cpu_s"])
                       if res["cpu_s"] else None)
            if label not in best or res["samples_per_s"] > best[label]["samples_per_s"]:
                best[label] = res
    rows = [best[label] for label, _, _ in settings]
    for res in rows:
        per_cpu = f"{res['samples_per_cpu_s']:6.0f}" if res["samples_per_cpu_s"] else "   n/a"
        LOG.info("%-20s %7.0f samples/s  %s samples/CPU-s  (%d batches of %d, start-up %.2f s)",
                 res["label"], res["samples_per_s"], per_cpu, res["steps"], args.batch,
                 res["startup_s"])
    result = {"batch": args.batch, "mode": "pretrain", "seconds": args.seconds, "rounds": args.rounds, "tasks": list(PRETRAIN_ORDER),
              "images": len(source.source.images), "load_s": load_s, "cpu_count": os.cpu_count(),
              "loadavg_1min": os.getloadavg()[0],
              "results": rows}
    LOG.info("decoded %d images once in %.2f s; load average %.1f on %d cores (shared machine)",
             result["images"], load_s, result["loadavg_1min"], os.cpu_count())
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
