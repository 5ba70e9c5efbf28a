"""Whole-image inference shared by eval.py, restore.py and the 310 pre/post-processing.

MindSpore is imported only when a model is loaded, so the commands' start-up checks (image sizes,
output paths) run before it. A *runner* maps a fixed-size numpy batch of 48x48 tiles to the network's outputs. It comes from a
checkpoint (an IPT task graph, compiled once and reused for every image), a MindIR file or an
ONNX file; `restore_array` tiles any image through it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from src.config import REPO_ROOT, Config
from src.image_io import from_rgb3, to_rgb3
from src.metrics import quantize
from src.tasks import Task
from src.tiling import DEFAULT_OVERLAP, Tiler, count_tiles
from src.utils import fmt_seconds

LOG = logging.getLogger(__name__)

PRETRAINED_DIR = REPO_ROOT / "pretrained"
Runner = Callable[[np.ndarray], np.ndarray]


def default_checkpoint(task: Task) -> Optional[Path]:
    """The weights shipped in pretrained/ for a task, if any (used when no --ckpt is given)."""
    for name in (f"ipt_tiny_{task.name}.ckpt", "ipt_tiny_pretrain.ckpt"):
        if (PRETRAINED_DIR / name).is_file():
            return PRETRAINED_DIR / name
    return None


def resolve_checkpoint(cfg: Config, task: Task) -> Path:
    """--ckpt, or the shipped weights for the task; a one-line error if there are none."""
    from src.checkpoint import CheckpointError
    if cfg.ckpt:
        path = Path(cfg.ckpt)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        return path
    path = default_checkpoint(task)
    if path is None:
        raise CheckpointError(f"no --ckpt given and no shipped weights for {task.name} in {PRETRAINED_DIR.name}/")
    LOG.info("no --ckpt given: using the shipped weights %s", path.relative_to(REPO_ROOT))
    return path


def load_task_model(cfg: Config, task: Task, path: Path):
    """Build IPT to fit a checkpoint's tasks, load it strictly, return the task's inference cell."""
    from src.checkpoint import CheckpointError, check_options, checkpoint_tasks, load_params_strict, \
        read_checkpoint
    from src.ipt import IPT
    params, meta = read_checkpoint(path)
    tasks = checkpoint_tasks(meta) or list(cfg.tasks)
    if task.name not in tasks:
        raise CheckpointError(f"{path} holds tasks {','.join(tasks)}, not {task.name}")
    cfg = Config(cfg, tasks=tasks)
    if meta.get("ipt_model") is None and cfg.num_queries and cfg.num_queries != len(tasks):
        cfg.num_queries = None
    saved = json.loads(meta["ipt_model"]) if meta.get("ipt_model") else {}
    if saved and cfg.get("config_path") is None and not set(cfg.get("overridden", ())) & set(saved):
        cfg.update(saved)  # no model options given: take the checkpoint's own
        LOG.info("model options from %s: %s", path.name,
                 " ".join(f"{k}={saved[k]}" for k in ("n_feats", "num_heads", "num_layers") if k in saved))
    check_options(cfg, meta, path)
    model = IPT(cfg)
    load_params_strict(model, params, str(path))
    model.set_train(False)
    return model.task_net(task.name)


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
    if suffix in (".mindir", ".onnx"):
        from src.exported import load_exported_runner
        return load_exported_runner(path, task, cfg.tile_batch)
    return CellRunner(load_task_model(cfg, task, path))


def tile_overlap(cfg: Config) -> int:
    """The fast-mode overlap in force: --tile_overlap, or the measured default when it is null."""
    return DEFAULT_OVERLAP if cfg.tile_overlap is None else cfg.tile_overlap


def make_tiler(cfg: Config, task: Task, runner: Runner, progress=None) -> Tiler:
    return Tiler(runner, task.scale, mode=cfg.tiling, batch_size=cfg.tile_batch,
                 overlap=tile_overlap(cfg), self_ensemble=cfg.self_ensemble, progress=progress)


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
    tiles = count_tiles(height, width, cfg.tiling, tile_overlap(cfg), cfg.self_ensemble)
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
