"""Restore your own images with IPT: super-resolve, denoise or derain a file, a folder or a glob.

    python restore.py --task sr_x2 --input photo.png --output restored/
    python restore.py --task denoise_30 --input "scans/*.jpg" --output clean/ --ckpt ipt_dn30.ckpt

Images of any size go through tiled inference (`--tiling fast`, the default, or `exact`, the
official stitching). Grayscale inputs give grayscale outputs; outputs are PNG unless
`--out_format` says otherwise (jpg, bmp, tiff, webp, or same as the input). Existing files are never replaced without `--overwrite`; unreadable inputs
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

from src.image_io import IMAGE_EXTENSIONS, ImageReadError, image_header, list_images, read_image, write_image
from src.inference import check_image_budget, make_runner, make_tiler, restore_uint8
from src.config import start_command
from src.utils import Progress, check_output_dir, fail, fmt_seconds, run_command, setup_device

LOG = logging.getLogger("restore")


def collect_inputs(spec: str) -> Tuple[List[Tuple[Path, Path]], List[Path]]:
    """(input file, output path relative to --output) for a file, a folder (recursive) or a glob,
    and the files passed over because they are not images (by extension)."""
    path = Path(spec)
    if path.is_file():
        return [(path, Path(path.name))], []
    if path.is_dir():
        others = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() not in IMAGE_EXTENSIONS)
        return [(p, p.relative_to(path)) for p in list_images(path, recursive=True)], others
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    images = [p for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS]
    return [(p, Path(p.name)) for p in images], [p for p in matches if p.suffix.lower() not in IMAGE_EXTENSIONS]


def plan_outputs(cfg, task, inputs: List[Tuple[Path, Path]]) -> List[Tuple[Path, Path, bool]]:
    """Every output path, checked before any work: no two inputs on one output, no input
    overwritten, nothing replaced without --overwrite, no image too large to restore.
    Returns (input, output, sized): sized is False where only decoding tells the size (TIFF)."""
    out_dir = Path(cfg.output)
    jobs, taken, sources = [], {}, {src.resolve() for src, _ in inputs}
    for src, rel in inputs:
        suffix = src.suffix.lower() if cfg.out_format == "same" else "." + cfg.out_format
        dst = out_dir / rel.with_suffix(suffix)
        key = dst.resolve()
        if key in taken:
            fail(f"{taken[key]} and {src} would both be written to {dst}; use --out_format same or "
                 f"restore them into separate folders")
        if key in sources:
            fail(f"{dst} is one of the inputs; choose another --output")
        if dst.exists() and not cfg.overwrite:
            fail(f"{dst} exists; pass --overwrite to replace it")
        header = image_header(src)
        if header is not None:
            try:
                check_image_budget(str(src), header.width, header.height, task, cfg)
            except ValueError as err:
                fail(str(err))
        taken[key] = src
        jobs.append((src, dst, header is not None))
    return jobs


def main(argv=None) -> int:
    cfg, task = start_command(argv, __doc__)
    if not cfg.input or not cfg.output:
        fail("give --input (file, folder or glob) and --output (folder)")
    inputs, not_images = collect_inputs(cfg.input)
    if not inputs:
        fail(f"no images found at {cfg.input}" + (f" ({len(not_images)} files that are not images)"
                                                   if not_images else ""))
    check_output_dir(cfg.output, "output")
    jobs = plan_outputs(cfg, task, inputs)
    out_dir = Path(cfg.output)
    if not_images:
        LOG.warning("skipped %d file(s) that are not images (%s): %s", len(not_images),
                    "/".join(sorted(IMAGE_EXTENSIONS)), ", ".join(str(p) for p in not_images[:10])
                    + (" ..." if len(not_images) > 10 else ""))
    from src.checkpoint import CheckpointError  # MindSpore loads here, after every start-up check
    setup_device(cfg)
    try:
        runner = make_runner(cfg, task, Path(cfg.ckpt) if cfg.ckpt else None)
    except (CheckpointError, ValueError) as err:
        fail(str(err))
    tiler = make_tiler(cfg, task, runner)
    progress = Progress(len(jobs), "restore", logger=LOG)
    failed = []
    for done, (src, dst, sized) in enumerate(jobs, 1):
        try:
            img = read_image(src, keep_gray=True)
            if not sized:  # a format sized only by decoding (TIFF): the same guard, now
                check_image_budget(str(src), img.shape[1], img.shape[0], task, cfg)
        except (ImageReadError, ValueError) as err:
            LOG.error("%s", err)
            failed.append(str(src))
            continue
        start = time.perf_counter()
        tiles = tiler.count(*img.shape[:2])
        tile_progress = Progress(tiles, f"  {src.name} tiles", every=10.0, logger=LOG)
        tiler.progress = (lambda done, _total: tile_progress.update(done)) if tiles > 500 else None
        out = restore_uint8(img, tiler)
        try:
            write_image(dst, out, overwrite=cfg.overwrite)
        except OSError as err:
            fail(f"cannot write {dst}: {err.strerror or err}")
        LOG.info("%s -> %s (%dx%d -> %dx%d, %d tiles, %s)", src, dst, img.shape[1], img.shape[0],
                 out.shape[1], out.shape[0], tiler.stats.tiles, fmt_seconds(time.perf_counter() - start))
        progress.update(done)
    if failed:
        LOG.error("%d of %d inputs could not be read and were skipped: %s", len(failed), len(jobs),
                  ", ".join(failed))
    LOG.info("restored %d image(s) into %s", len(jobs) - len(failed), out_dir)
    return 1 if failed and len(failed) == len(jobs) else 0


if __name__ == "__main__":
    run_command(main)
