"""Restore your own images with IPT: super-resolve, denoise or derain a file, a folder or a glob.

    python restore.py --task sr_x2 --input photo.png --output restored/
    python restore.py --task denoise_30 --input "scans/*.jpg" --output clean/ --ckpt ipt_dn30.ckpt

Images of any size go through tiled inference (`--tiling fast`, the default, or `exact`, the
official stitching). Grayscale inputs give grayscale outputs; outputs are PNG unless
`--out_format same`. Existing files are never replaced without `--overwrite`; unreadable inputs
are skipped and listed at the end. Without `--ckpt` the shipped IPT-tiny weights are used.
"""
from __future__ import annotations

import glob
import logging
import sys
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np

from src.checkpoint import CheckpointError
from src.image_io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_image
from src.inference import make_runner, make_tiler, restore_array
from src.metrics import quantize
from src.utils import Progress, fail, fmt_seconds, setup_device, start_command

LOG = logging.getLogger("restore")


def collect_inputs(spec: str) -> List[Tuple[Path, Path]]:
    """(input file, output path relative to --output) for a file, a folder (recursive) or a glob."""
    path = Path(spec)
    if path.is_file():
        return [(path, Path(path.name))]
    if path.is_dir():
        return [(p, p.relative_to(path)) for p in list_images(path, recursive=True)]
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    return [(p, Path(p.name)) for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS]


def main(argv=None) -> int:
    cfg, task = start_command(argv, __doc__)
    if not cfg.input or not cfg.output:
        fail("give --input (file, folder or glob) and --output (folder)")
    inputs = collect_inputs(str(cfg.input))
    if not inputs:
        fail(f"no images found at {cfg.input}")
    out_dir = Path(cfg.output)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--output must be a folder: {out_dir} is a file")
    jobs = []
    for src, rel in inputs:
        suffix = src.suffix.lower() if cfg.out_format == "same" else ".png"
        dst = out_dir / rel.with_suffix(suffix)
        if dst.exists() and not cfg.overwrite:
            fail(f"{dst} exists; pass --overwrite to replace it")
        jobs.append((src, dst))
    setup_device(cfg)
    try:
        runner = make_runner(cfg, task, Path(cfg.ckpt) if cfg.ckpt else None)
    except (CheckpointError, ValueError) as err:
        fail(str(err))
    tiler = make_tiler(cfg, task, runner)
    progress = Progress(len(jobs), "restore", logger=LOG)
    failed = []
    for done, (src, dst) in enumerate(jobs, 1):
        try:
            img = read_image(src, keep_gray=True)
        except ImageReadError as err:
            LOG.error("%s", err)
            failed.append(str(src))
            continue
        start = time.perf_counter()
        tiles = tiler.count(*img.shape[:2])
        tile_progress = Progress(tiles, f"  {src.name} tiles", every=10.0, logger=LOG)
        tiler.progress = (lambda done, _total: tile_progress.update(done)) if tiles > 500 else None
        out = quantize(restore_array(img, tiler)).astype(np.uint8)
        write_image(dst, out, overwrite=bool(cfg.overwrite))
        LOG.info("%s -> %s (%dx%d -> %dx%d, %d tiles, %s)", src, dst, img.shape[1], img.shape[0],
                 out.shape[1], out.shape[0], tiler.stats.tiles, fmt_seconds(time.perf_counter() - start))
        progress.update(done)
    if failed:
        LOG.error("%d of %d inputs could not be read and were skipped: %s", len(failed), len(jobs),
                  ", ".join(failed))
    LOG.info("restored %d image(s) into %s", len(jobs) - len(failed), out_dir)
    return 1 if failed and len(failed) == len(jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
