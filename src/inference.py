"""Whole-image inference shared by eval.py, restore.py and the 310 pre/post-processing.

MindSpore is imported only when a model is loaded, so the commands' start-up checks (image sizes,
output paths) run before it. A *runner* maps a fixed-size numpy batch of 48x48 tiles to the
network's outputs. It comes from a checkpoint (an IPT task graph, compiled once and reused for
every image; which file and how it loads: src/weights.py), a MindIR file or an ONNX file
(src/exported.py); `restore_array` tiles any image through it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from src.config import Config
from src.image_io import from_rgb3, to_rgb3
from src.utils import EXPORTED_SUFFIXES
from src.metrics import quantize
from src.tasks import Task
from src.tiling import Tiler, count_tiles
from src.utils import fmt_seconds
from src.weights import load_task_model, resolve_checkpoint

LOG = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], np.ndarray]


class CellRunner:
    """Runs a MindSpore cell on numpy batches (a compiled graph per input shape, reused)."""

    def __init__(self, cell) -> None:
        self.cell = cell

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import mindspore as ms
        return self.cell(ms.Tensor(np.ascontiguousarray(batch, np.float32))).asnumpy()


def make_runner(cfg: Config, task: Task, path: Optional[Path] = None) -> Runner:
    """A tile runner from a .ckpt, .mindir or .onnx file (default: the shipped weights)."""
    path = Path(path) if path else resolve_checkpoint(cfg, task)
    suffix = path.suffix.lower()
    if suffix in EXPORTED_SUFFIXES:
        from src.exported import load_exported_runner
        return load_exported_runner(path, task, cfg.tile_batch)
    return CellRunner(load_task_model(cfg, task, path))


def make_tiler(cfg: Config, task: Task, runner: Runner) -> Tiler:
    """The tiler of the config's tiling options (a null --tile_overlap: the tiler's default)."""
    return Tiler(runner, task.scale, mode=cfg.tiling, batch_size=cfg.tile_batch,
                 overlap=cfg.tile_overlap, self_ensemble=cfg.self_ensemble)


SECONDS_PER_TILE = {"IPT-tiny": 0.03, "IPT-base": 1.2}  # measured on a 2-core AMD EPYC (AVX2), for estimates


def check_image_budget(name: str, width: int, height: int, task: Task, cfg: Config) -> None:
    """Refuse an image whose work would be unbounded for this machine, before any pixel is decoded.

    Raises ValueError naming the image, its size, the memory and tiles it would need, and the
    option that raises the limit.
    """
    megapixels, limit = width * height / 1e6, cfg.max_megapixels
    if megapixels <= limit:
        return
    s = task.scale
    # decoded uint8 + float32 copy + padded source, then the float32 output, its copy and uint8
    need = width * height * 27 + width * height * s * s * 27
    tiles = count_tiles(height, width, cfg.tiling, cfg.tile_overlap, cfg.self_ensemble)
    times = ", ".join(f"{fmt_seconds(tiles * sec)} with {model}" for model, sec in SECONDS_PER_TILE.items())
    raise ValueError(f"{name} is {width}x{height} ({megapixels:.0f} MP), over --max_megapixels {limit:g}: "
                     f"{task.name} would need about {need / 2 ** 30:.1f} GB of memory and {tiles:,} tiles "
                     f"({times} on a 2-core CPU); raise --max_megapixels to go on")


def restore_uint8(img: np.ndarray, tiler: Tiler) -> np.ndarray:
    """HWC RGB or HW gray -> the restored 8-bit image, as `quantize(restore_array(...))` gives it.

    In fast mode the output is quantized band by band as the tiler finishes rows, so no
    full-size float copy of the output exists: the output costs 3 bytes per pixel instead of
    about 40 (float32 canvas, its transposed and quantized copies).
    """
    if tiler.mode != "fast" or tiler.self_ensemble:
        return quantize(restore_array(img, tiler)).astype(np.uint8)
    gray = img.ndim == 2
    h, w, s = img.shape[0], img.shape[1], tiler.scale
    out = np.empty((h * s, w * s) if gray else (h * s, w * s, 3), np.uint8)

    def emit(row: int, rows: np.ndarray) -> None:
        block = rows.transpose(1, 2, 0)
        out[row:row + rows.shape[1]] = quantize(from_rgb3(block, gray)).astype(np.uint8)
    tiler.stream(np.ascontiguousarray(to_rgb3(img).transpose(2, 0, 1), dtype=np.float32), emit)
    return out


def restore_array(img: np.ndarray, tiler: Tiler) -> np.ndarray:
    """HWC RGB or HW gray (uint8 or float, 0..255) -> restored float32 of the same nature."""
    gray = img.ndim == 2
    chw = np.ascontiguousarray(to_rgb3(img).transpose(2, 0, 1), dtype=np.float32)
    out = tiler(chw).transpose(1, 2, 0)
    return from_rgb3(out, gray)
