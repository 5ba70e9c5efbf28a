"""Score IPT on a benchmark: PSNR/SSIM per image and on average, IPT protocol by default.

    python eval.py --task sr_x2 --data_path ../shared/datasets/CSet5 --ckpt ipt.ckpt
    python eval.py --task derain --data_path ../shared/datasets/Rain100L --baseline
    python eval.py --task denoise_30 --data_path ../shared/datasets/CBSD68 --ckpt dn.ckpt --metric rgb

`--baseline` scores the degraded input itself (bicubic upsampling for SR, the noisy or rainy
image), so every table has its reference row. `--ckpt` takes a .ckpt, .mindir or .onnx file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from src.benchmarks import open_benchmark
from src.checkpoint import CheckpointError
from src.config import Config, start_command
from src.image_io import write_image
from src.evaluation import means, score_all
from src.pairs import PairLayoutError
from src.tasks import Task
from src.utils import (Progress, check_output_dir, check_output_file, fail, fmt_seconds, recorded_path,
                       report_result, run_command, setup_device, write_json)

LOG = logging.getLogger("eval")


def evaluate(cfg: Config, task: Task) -> dict:
    """Run the benchmark; returns the per-image rows and the means (also logged)."""
    bench = open_benchmark(cfg.data_path, task.kind, task.scale, task.sigma, seed=cfg.noise_seed)
    if len(bench) == 0:
        fail(f"no benchmark images found in {cfg.data_path} for {task.name}")
    tiler = None
    if not cfg.baseline:
        from src.inference import make_runner, make_tiler
        tiler = make_tiler(cfg, task, make_runner(cfg, task, Path(cfg.ckpt) if cfg.ckpt else None))
    save_dir = Path(cfg.save_dir) if cfg.save_dir else None
    rows, progress = [], Progress(len(bench), "eval", logger=LOG)
    data_path = recorded_path(cfg.data_path)  # as the JSON names it

    def keep(row: dict) -> None:
        rows.append({k: v for k, v in row.items() if k != "output"})
        if cfg.json:  # kept as they come: an interrupted or failed run loses no scored image
            write_json(cfg.json, {"task": task.name, "data_path": data_path, "complete": False, "rows": rows})
        LOG.info("%-16s PSNR %.3f dB  SSIM %.4f  %.2f s", row["name"], row["psnr"], row["ssim"], row["seconds"])
        if save_dir:
            try:
                write_image(save_dir / f"{row['name']}.png", row["output"].astype(np.uint8), overwrite=cfg.overwrite)
            except OSError as err:
                fail(f"cannot write {save_dir / row['name']}.png: {err.strerror or err}")
        progress.update(len(rows))

    score_all(bench, task, tiler, cfg.metric, on_row=keep)
    for skipped in bench.skipped:
        LOG.error("skipped %s: %s", skipped.path, skipped.reason)
    result = {
        "task": task.name, "data_path": data_path, "complete": True, "metric": cfg.metric,
        "model": "baseline" if cfg.baseline else str(cfg.ckpt or "shipped"),
        "tiling": None if cfg.baseline else cfg.tiling, "self_ensemble": cfg.self_ensemble,
        "images": len(rows), "skipped": [recorded_path(s.path) for s in bench.skipped],
        **means(rows),
        "seconds_per_image": float(np.mean([r["seconds"] for r in rows])) if rows else 0.0,
        "rows": rows,
    }
    LOG.info("%s on %s (%d images%s, %s): PSNR %.2f dB  SSIM %.4f  (%s per image)", task.name,
             Path(cfg.data_path).name, len(rows), f", {len(bench.skipped)} skipped" if bench.skipped else "",
             "Y" if cfg.metric == "y" else "RGB", result["psnr"], result["ssim"],
             fmt_seconds(result["seconds_per_image"]) if result["seconds_per_image"] >= 1
             else f"{result['seconds_per_image']:.2f} s")
    return result


def main(argv=None) -> int:
    cfg, task = start_command(argv, __doc__, need_data=True)
    if cfg.json:
        check_output_file(cfg.json, "json", cfg.overwrite)
    if cfg.save_dir:
        check_output_dir(cfg.save_dir, "save_dir")
    if not cfg.baseline:
        setup_device(cfg)
    try:
        result = evaluate(cfg, task)
    except (CheckpointError, FileExistsError, PairLayoutError) as err:
        fail(str(err))
    report_result(result, cfg.json)
    return 0


if __name__ == "__main__":
    run_command(main)
