"""A held-out validation split of a training folder, made of symbolic links (nothing is copied).

Choices made during training (the best checkpoint, a recipe's steps, an experiment's arms) must not
look at the benchmarks, which are test sets. ``split_folder`` turns one clean training folder into
``DST/train`` (every image but the held-out ones, at their relative paths) and ``DST/val`` (the
held-out ones). The default held-out images are the last 10 DIV2K crops of
``../shared/datasets/train`` (0891-0900): no benchmark image, and not used for training.
Used by ``scripts/train_tiny.sh`` and ``bench/bench_pretrain_benefit.py``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Tuple, Union

from src.image_io import list_images

PathLike = Union[str, Path]
DEFAULT_HOLDOUT: Tuple[str, ...] = tuple(f"DIV2K_crop256/{i:04d}.png" for i in range(891, 901))


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target``; an equal link is kept, another link replaced, a real file refused."""
    if link.is_symlink():
        if os.readlink(link) == str(target):
            return
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link made by the split: remove it or pick another folder")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def split_folder(src: PathLike, dst: PathLike, holdout: Sequence[str] = DEFAULT_HOLDOUT) -> Tuple[Path, Path]:
    """Make (or bring up to date) ``dst/train`` and ``dst/val``; returns the two folders.

    ``holdout`` lists paths relative to ``src``; their file names must differ (``val`` is flat).
    Links left from an earlier split that no longer belong are removed.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise NotADirectoryError(f"training folder not found: {src}")
    missing = [h for h in holdout if not (src / h).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} held-out image(s) not in {src}, e.g. {missing[0]}")
    names = [Path(h).name for h in holdout]
    if len(set(names)) != len(names):
        raise ValueError("held-out images must have distinct file names")
    held = set(holdout)
    train_dir, val_dir = dst / "train", dst / "val"
    wanted = set()
    for path in list_images(src):
        rel = path.relative_to(src).as_posix()
        link = val_dir / path.name if rel in held else train_dir / rel
        _link(path.resolve(), link)
        wanted.add(link)
    for folder in (train_dir, val_dir):
        for old in [p for p in folder.rglob("*") if p.is_symlink() and p not in wanted]:
            old.unlink()
    return train_dir, val_dir


__all__ = ["DEFAULT_HOLDOUT", "split_folder"]
