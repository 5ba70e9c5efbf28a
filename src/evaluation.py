"""Scoring restored benchmark images: the one protocol of eval.py and of validation during training.

PSNR/SSIM on Y (the IPT protocol) and on RGB for every image, the task's crop border, outputs
quantized to 8 bits first (as MATLAB's scripts do). The restorer is a tiler over any runner (a
checkpoint, an exported file, or the model being trained), or None for the degraded input itself.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from src.benchmarks import BenchmarkItem, baseline_output
from src.metrics import psnr, quantize, ssim
from src.tasks import Task

SCORES = ("psnr", "ssim", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def score_item(item: BenchmarkItem, task: Task, tiler=None, metric: str = "y") -> Dict:
    """One image restored (or its baseline) and scored; the output is returned under 'output'."""
    start = time.perf_counter()
    if tiler is None:
        out = baseline_output(item, task.kind, task.scale)
    else:
        from src.inference import restore_array
        out = restore_array(item.input, tiler)
    seconds = time.perf_counter() - start
    out = quantize(out)
    row = {"name": item.name, "seconds": seconds}
    for m in ("y", "rgb"):  # both protocols are cheap next to the network
        row[f"psnr_{m}"] = psnr(out, item.target, task.crop_border, m)
        row[f"ssim_{m}"] = ssim(out, item.target, task.crop_border, m)
    row["psnr"], row["ssim"] = row[f"psnr_{metric}"], row[f"ssim_{metric}"]
    if tiler is not None:
        row["tiles"] = tiler.stats.tiles
    row["output"] = out
    return row


def score_all(items: Iterable[BenchmarkItem], task: Task, tiler=None, metric: str = "y",
              on_row: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Rows of :func:`score_item` (without the output images) for every item, in order."""
    rows = []
    for item in items:
        row = score_item(item, task, tiler, metric)
        if on_row is not None:
            on_row(row)
        row.pop("output")
        rows.append(row)
    return rows


def means(rows: List[Dict]) -> Dict[str, float]:
    return {key: float(np.mean([r[key] for r in rows])) if rows else float("nan") for key in SCORES}


__all__ = ["score_item", "score_all", "means", "SCORES"]
