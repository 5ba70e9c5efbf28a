"""Convert a training image folder to sharded MindRecord files, once; train.py then reads them.

    python scripts/make_mindrecord.py --train_path /data/imagenet/train --out /data/imagenet_mr \
        [--shards 64] [--workers 8] [--overwrite]
    bash scripts/run_distribute_train.sh 8 default --train_path /data/imagenet_mr

Every image is decoded once to check it (ImageNet's CMYK, gray and PNG-named-JPEG files are kept,
truncated and non-image files are logged and left out) and stored with its original bytes. An
interrupted conversion continues where it stopped when run again with the same arguments
(finished shards are kept). When to use it instead of the folder: see README "Dataset".
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.image_index import open_index  # noqa: E402
from src.mindrecord_data import MANIFEST, shard_name, write_mindrecord  # noqa: E402
from src.utils import check_output_dir, fail, run_command, setup_logging  # noqa: E402

LOG = logging.getLogger("make_mindrecord")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_path", required=True, help="folder tree of clean training images")
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--shards", type=int, default=16, help="number of MindRecord files (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    parser.add_argument("--index", default=None, help="the folder's cached index (default: per-machine cache)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished conversion in --out")
    args = parser.parse_args(argv)
    setup_logging()
    src, out = Path(args.train_path), Path(args.out)
    if not src.is_dir():
        fail(f"--train_path not found: {src}")
    if args.shards < 1 or args.workers < 1:
        fail("--shards and --workers must be >= 1")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        fail(f"--out {out} must not be inside --train_path {src} (it would be indexed as training data)")
    check_output_dir(out, "out")
    if (out / MANIFEST).is_file() and not args.overwrite:
        fail(f"{out} already holds a finished conversion; pass --overwrite to redo it")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if not p.name.startswith("ipt_")]
        if foreign:
            fail(f"--out {out} holds other files ({foreign[0]}, ...): choose an empty folder")
        if args.overwrite:
            for p in out.iterdir():
                p.unlink()
        else:
            suffix = shard_name(0, args.shards).split("-of-")[1]
            other = [p.name for p in out.glob("ipt_train-*") if p.name.split("-of-")[1] != suffix
                     and not p.name.split("-of-")[1].startswith(suffix)]
            if other:
                fail(f"{out} holds a partial conversion with another --shards ({other[0]}): "
                     f"use the same value or --overwrite")
            if any(out.glob("ipt_train-*.done")):
                LOG.info("continuing the partial conversion in %s", out)
    index = open_index(src, args.index)
    if not len(index):
        fail(f"no images found under {src}")
    write_mindrecord(index, out, args.shards, args.workers)
    return 0


if __name__ == "__main__":
    run_command(main)
