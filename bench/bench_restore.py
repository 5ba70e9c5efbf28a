"""Whole-image restore speed (src.inference + src.tiling): exact vs fast tiling, IPT-base and IPT-tiny.

    python bench/bench_restore.py [--models base,tiny] [--sizes 256x256,1000x750] [--images 2]
                                  [--large_images 1]
                                  [--ckpt base.ckpt] [--tiny_ckpt tiny.ckpt] [--batch 8]
                                  [--modes exact,fast,fast@12] [--max_exact_s 600]
                                  [--device_target CPU] [--json out.json]
    python bench/bench_restore.py --quick      # smoke run: ipt_tiny only, one image per size

Inputs are real images from ../shared/datasets/train/DIV2K_crop256: 256x256 crops as they are,
and 1000x750 mosaics of 4x3 crops (cut to size). Each model runs in its own subprocess (peak
memory VmHWM is its own); in it every image is restored with `exact` and then `fast` tiling
through one compiled graph, so the first run pays the compile and the rest show per-image cost.
`net s` is the time inside the network calls, `host s` the tiler's numpy work around them.
An exact run whose estimated time exceeds --max_exact_s is not run but estimated from the
measured seconds per tile (marked `est`). Weights are random unless --ckpt/--tiny_ckpt are given
(speed does not depend on them).
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
from typing import List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import load_config  # noqa: E402
from src.tasks import get_task  # noqa: E402
from src.utils import peak_rss_mb  # noqa: E402

LOG = logging.getLogger("bench_restore")
DIV2K = ROOT.parent / "shared" / "datasets" / "train" / "DIV2K_crop256"
MODELS = {"base": None, "tiny": "ipt_tiny"}
LARGE_PIXELS = 512 * 512  # sizes above this get --large_images images


def bench_images(size: Tuple[int, int], count: int) -> List[Tuple[str, np.ndarray]]:
    """`count` real HxW RGB uint8 images: DIV2K crops, or mosaics of them for larger sizes."""
    from src.image_io import read_image
    files = sorted(DIV2K.glob("*.png"))
    if not files:
        raise SystemExit(f"error: no images in {DIV2K}")
    h, w = size
    rows, cols = -(-h // 256), -(-w // 256)
    out = []
    for k in range(count):
        start = k * rows * cols
        names = [files[(start + i) % len(files)] for i in range(rows * cols)]
        tiles = [read_image(p)[:256, :256] for p in names]
        mosaic = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1)
                                 for r in range(rows)], axis=0)
        label = names[0].stem if rows * cols == 1 else f"{names[0].stem}+{rows * cols - 1}"
        out.append((label, np.ascontiguousarray(mosaic[:h, :w])))
    return out


class TimedRunner:
    """Wraps a tile runner: seconds spent in the network, per call."""

    def __init__(self, runner) -> None:
        self.runner, self.calls = runner, []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.runner(batch)
        self.calls.append(time.perf_counter() - t0)
        return out


def _model_cfg(args, model: str):
    return load_config(MODELS.get(model, model), {
        "device_target": args.device_target, "device_id": args.device_id, "threads": args.threads,
        "mode": "GRAPH", "tasks": ["sr_x2"], "task": "sr_x2", "tile_batch": args.batch})


def worker(args) -> dict:
    """Restore every image with each mode in this process; one compiled graph for all."""
    import mindspore as ms
    from src.inference import CellRunner, make_tiler, restore_array
    from src.weights import load_task_model
    from src.ipt import IPT
    from src.utils import setup_device
    cfg = _model_cfg(args, args.model)
    setup_device(cfg)
    task = get_task("sr_x2")
    ckpt = args.ckpt if args.model == "base" else args.tiny_ckpt
    if ckpt:
        cell = load_task_model(cfg, task, Path(ckpt))
    else:
        ms.set_seed(0)
        model = IPT(cfg)
        model.set_train(False)
        cell = model.task_net(task.name)
    runner = TimedRunner(CellRunner(cell))
    tilers = {}
    for label in args.modes:  # 'exact', 'fast' (the tiler's default overlap) or 'fast@N'
        mode, _, overlap = label.partition("@")
        cfg.tiling, cfg.tile_overlap = mode, (int(overlap) if overlap else None)
        tilers[label] = make_tiler(cfg, task, runner)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    runs = []
    for wh in sizes:
        w, h = wh
        count = args.images if h * w <= LARGE_PIXELS else args.large_images
        for label, img in bench_images((h, w), count):
            for mode, tiler in tilers.items():
                tiles = tiler.count(h, w)
                per_tile = _steady_per_tile(runner, args.batch)
                if (mode == "exact" and per_tile is not None
                        and tiles * per_tile > args.max_exact_s):
                    runs.append({"size": f"{w}x{h}", "image": label, "mode": mode, "tiles": tiles,
                                 "batches": -(-tiles // args.batch), "estimated": True,
                                 "seconds": tiles * per_tile})
                    LOG.info("  %s %s %s: %d tiles, not run (est. %.0f s)", args.model, mode, label,
                             tiles, tiles * per_tile)
                    continue
                first_call = len(runner.calls)
                t0 = time.perf_counter()
                out = restore_array(img, tiler)
                total = time.perf_counter() - t0
                net = float(sum(runner.calls[first_call:]))
                assert out.shape == (2 * h, 2 * w, 3)
                runs.append({"size": f"{w}x{h}", "image": label, "mode": mode, "tiles": tiler.stats.tiles,
                             "batches": tiler.stats.batches, "estimated": False, "seconds": total,
                             "net_s": net, "host_s": total - net, "has_first_call": first_call == 0})
                LOG.info("  %s %s %s %dx%d: %d tiles, %.2f s (net %.2f, host %.3f)", args.model, mode,
                         label, w, h, tiler.stats.tiles, total, net, total - net)
    calls = np.asarray(runner.calls)
    steady = float(np.median(calls[1:])) if len(calls) > 1 else float(calls[0])
    compile_s = float(calls[0] - steady)
    for r in runs:
        r["steady_s"] = r["seconds"] - (compile_s if r.get("has_first_call") else 0.0)
        if not r["estimated"]:
            r["s_per_batch"] = (r["steady_s"] - r["host_s"]) / r["batches"]
    return {"model": args.model, "batch": args.batch, "ckpt": ckpt or None, "compile_s": compile_s,
            "seconds_per_batch": steady, "runs": runs, "peak_rss_mb": peak_rss_mb()}


def _steady_per_tile(runner: TimedRunner, batch: int) -> Optional[float]:
    if len(runner.calls) < 3:
        return None
    return float(np.median(runner.calls[1:])) / batch


def summarize(result: dict) -> list:
    """Per model, size and fast variant: steady exact and fast seconds (median over images),
    tiles, and the speedup (median over images of exact/fast, both run back to back)."""
    rows = []
    for m in result["models"]:
        if "error" in m:
            continue
        runs = m["runs"]
        for size in dict.fromkeys(r["size"] for r in runs):
            at = [r for r in runs if r["size"] == size]
            exact = [r for r in at if r["mode"] == "exact"]
            for fast in dict.fromkeys(r["mode"] for r in at if r["mode"] != "exact"):
                fr = [r for r in at if r["mode"] == fast]
                row = {"model": m["model"], "size": size, "fast_mode": fast,
                       "fast": float(np.median([r["steady_s"] for r in fr])), "fast_tiles": fr[0]["tiles"],
                       "exact": None, "exact_tiles": None, "exact_est": None, "speedup": None,
                       "batch_ratio": None}
                if exact:
                    row.update(exact=float(np.median([r["steady_s"] for r in exact])),
                               exact_tiles=exact[0]["tiles"], exact_est=all(r["estimated"] for r in exact),
                               batch_ratio=exact[0]["batches"] / fr[0]["batches"])
                    ex = {r["image"]: r["steady_s"] for r in exact}
                    ratios = [ex[r["image"]] / r["steady_s"] for r in fr if r["image"] in ex]
                    row["speedup"] = float(np.median(ratios)) if ratios else None
                rows.append(row)
    return rows


def print_report(result: dict) -> None:
    print(f"\nwhole-image restore, sr_x2, {result['device_target']}, tile batch {result['batch']}")
    head = (f"{'model':5s} {'mode':8s} {'size':9s} {'image':9s} {'tiles':>5s} {'batches':>7s} "
            f"{'seconds':>8s} {'steady s':>8s} {'net s':>7s} {'host s':>7s} {'s/batch':>7s}")
    print(head + "\n" + "-" * len(head))
    for m in result["models"]:
        if "error" in m:
            print(f"{m['model']:5s} {m['error']}")
            continue
        for r in m["runs"]:
            if r["estimated"]:
                print(f"{m['model']:5s} {r['mode']:8s} {r['size']:9s} {r['image']:9s} {r['tiles']:5d} "
                      f"{r['batches']:7d} {'-':>8s} {r['seconds']:7.0f}e {'-':>7s} {'-':>7s}")
                continue
            print(f"{m['model']:5s} {r['mode']:8s} {r['size']:9s} {r['image']:9s} {r['tiles']:5d} "
                  f"{r['batches']:7d} {r['seconds']:8.2f} {r['steady_s']:8.2f} {r['net_s']:7.2f} "
                  f"{r['host_s']:7.3f} {r['s_per_batch']:7.3f}"
                  + ("  <- first call (compile)" if r["has_first_call"] else ""))
    print("(steady s: seconds minus the one-off compile; s/batch: network seconds per call, shows the "
          "machine load of each run; e = estimated from the measured s/tile)")
    head = (f"{'model':5s} {'size':9s} {'exact s':>9s} {'tiles':>6s} {'fast':>8s} {'fast s':>8s} "
            f"{'tiles':>6s} {'speedup':>7s} {'batches':>7s} {'compile s':>9s} {'s/batch':>8s} {'peak MB':>8s}")
    print("\n" + head + "\n" + "-" * len(head))
    models = {m["model"]: m for m in result["models"] if "error" not in m}
    for row in result["summary"]:
        m = models[row["model"]]
        ex = "-" if row["exact"] is None else f"{row['exact']:8.1f}" + ("e" if row["exact_est"] else " ")
        sp = "-" if row["speedup"] is None else f"{row['speedup']:6.2f}x"
        br = "-" if row["batch_ratio"] is None else f"{row['batch_ratio']:6.2f}x"
        print(f"{row['model']:5s} {row['size']:9s} {ex:>9s} {row['exact_tiles'] or 0:6d} {row['fast_mode']:>8s} "
              f"{row['fast']:8.2f} {row['fast_tiles']:6d} {sp:>7s} {br:>7s} {m['compile_s']:9.1f} "
              f"{m['seconds_per_batch']:8.3f} {m['peak_rss_mb'] or 0:8.0f}")
    print("(speedup: measured exact/fast per image, both steady, median over images; batches: "
          "exact/fast network calls,\n the speedup at equal machine load; s/batch: median network call; "
          "e = exact estimated)")


def _run_worker(model: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", "--_out", str(out),
               "--model", model, "--sizes", ",".join(args.sizes), "--images", str(args.images), "--large_images", str(args.large_images),
               "--modes", ",".join(args.modes), "--batch", str(args.batch),
               "--max_exact_s", str(args.max_exact_s), "--device_target", args.device_target,
               "--device_id", str(args.device_id), "--threads", str(args.threads)]
        if args.ckpt:
            cmd += ["--ckpt", args.ckpt]
        if args.tiny_ckpt:
            cmd += ["--tiny_ckpt", args.tiny_ckpt]
        LOG.info("running %s", model)
        proc = subprocess.run(cmd, cwd=ROOT, check=False)
        if proc.returncode != 0 or not out.exists():
            return {"model": model, "error": f"worker exited with {proc.returncode}"}
        return json.loads(out.read_text())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="base,tiny")
    parser.add_argument("--sizes", default="256x256,1000x750", help="WxH list")
    parser.add_argument("--images", type=int, default=2, help="images per size, in one process")
    parser.add_argument("--large_images", type=int, default=1, help="images per size above 512x512")
    parser.add_argument("--modes", default="exact,fast",
                        help="exact, fast (the tiler's default overlap) and/or fast@N (overlap N)")
    parser.add_argument("--batch", type=int, default=8, help="tiles per network call")
    parser.add_argument("--ckpt", default="", help="IPT-base sr_x2 checkpoint (default: random init)")
    parser.add_argument("--tiny_ckpt", default="", help="IPT-tiny checkpoint (default: random init)")
    parser.add_argument("--max_exact_s", type=float, default=600.0,
                        help="estimate instead of running an exact restore longer than this")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny only, one image per size")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--device_id", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores")
    parser.add_argument("--json", default="")
    parser.add_argument("--report", default="", help="print the tables of a saved --json file and exit")
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="base", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    if args.quick:
        args.models, args.images, args.large_images = "tiny", 1, 1
        args.max_exact_s = min(args.max_exact_s, 30.0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.report:
        result = json.loads(Path(args.report).read_text())
        print_report(result)
        return result
    if args._worker:
        result = worker(args)
        Path(args._out).write_text(json.dumps(result))
        return result
    result = {"device_target": args.device_target, "threads": args.threads or os.cpu_count(),
              "batch": args.batch, "sizes": args.sizes, "images": args.images, "large_images": args.large_images,
              "modes": args.modes,
              "models": [_run_worker(m, args) for m in args.models.split(",") if m]}
    result["summary"] = summarize(result)
    print_report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
