"""Training samples: a clean image degraded on the fly, or a real (degraded, clean) pair, cropped.

A source answers two questions for the keyed sampler in src/dataset.py: which image a random
stream draws (``pick``; ``pick_index`` without decoding, for MindRecord plans) and which training
pair a crop of it gives (``crop``: crop, EDSR/IPT flips and transposition, then degradation of
the clean crop, so that rain stays vertical). ``sample`` is both with one stream.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from src.degradations import add_gaussian_noise, add_rain, bicubic_downsample
from src.image_io import ImageReadError, read_image
from src.image_store import ImageStore, RamImages
from src.pairs import find_pairs
from src.tasks import PATCH as PATCH_SIZE
from src.tasks import Task, get_task

LOG = logging.getLogger(__name__)

MAX_REDRAWS = 8          # an undecodable image is replaced by a redraw from the same stream

TaskLike = Union[str, Task]
Sample = Tuple[np.ndarray, np.ndarray]  # (degraded HWC, clean HWC), before CHW conversion


def _augment(img: np.ndarray, hflip: bool, vflip: bool, rot90: bool) -> np.ndarray:
    """EDSR/IPT augmentation: horizontal/vertical flip, then transpose (90-degree rotation)."""
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if rot90:
        img = img.transpose(1, 0, 2)
    return img


def _draw_augment(rng: np.random.Generator) -> Tuple[bool, bool, bool]:
    flips = rng.random(3) < 0.5
    return bool(flips[0]), bool(flips[1]), bool(flips[2])


def _add_streaks(clean: np.ndarray, streaks: ImageStore, rng: np.random.Generator) -> np.ndarray:
    """Real rain: a random crop of a drawn streak map (RainTrainL ``rainstreak*``), added and clipped.

    Maps smaller than the patch are scaled up to cover it.
    """
    h, w = clean.shape[:2]
    layer = streaks.get(int(rng.integers(len(streaks))))
    sh, sw = layer.shape[:2]
    if sh < h or sw < w:
        f = max(h / sh, w / sw)
        layer = cv2.resize(layer, (max(w, int(np.ceil(sw * f))), max(h, int(np.ceil(sh * f)))),
                           interpolation=cv2.INTER_LINEAR)
        sh, sw = layer.shape[:2]
    y, x = int(rng.integers(sh - h + 1)), int(rng.integers(sw - w + 1))
    rainy = clean.astype(np.int16) + layer[y:y + h, x:x + w]
    return np.clip(rainy, 0, 255).astype(np.uint8)


def degrade(clean: np.ndarray, task: Task, rng: np.random.Generator,
            streaks: Optional[ImageStore] = None) -> np.ndarray:
    """The network input for a clean HR patch: bicubic LR (uint8), noisy (float32) or rainy (uint8).

    Noise is clipped and kept float (unrounded), as in the official test protocol. Rain is
    synthetic unless a store of real streak maps is given.
    """
    if task.kind == "sr":
        return bicubic_downsample(clean, task.scale)
    if task.kind == "denoise":
        return add_gaussian_noise(clean, task.sigma, rng=rng)
    if task.kind == "derain":
        return add_rain(clean, rng=rng) if streaks is None else _add_streaks(clean, streaks, rng)
    raise ValueError(f"unknown task kind {task.kind!r}")


class SyntheticPairs:
    """Clean images degraded on the fly; serves any task whose HR patch fits an image."""

    def __init__(self, images: Union[ImageStore, Sequence[np.ndarray]], patch_size: int = PATCH_SIZE,
                 streaks: Optional[ImageStore] = None):
        self.store = images if isinstance(images, ImageStore) else RamImages(images)
        self.patch_size = patch_size
        self.streaks = streaks
        self._eligible: Dict[int, np.ndarray] = {}
        self._warned: set = set()

    @property
    def digest(self) -> str:
        return self.store.digest + (self.streaks.digest if self.streaks is not None else "")

    def eligible(self, task: Task) -> np.ndarray:
        """Indices of images at least (patch * scale) on both sides."""
        if task.scale not in self._eligible:
            short = np.minimum(self.store.heights, self.store.widths)
            self._eligible[task.scale] = np.flatnonzero(short >= self.patch_size * task.scale)
        return self._eligible[task.scale]

    def pick_index(self, task: Task, rng: np.random.Generator) -> int:
        """The next eligible image drawn from ``rng`` (no decoding)."""
        pool = self.eligible(task)
        return int(pool[rng.integers(len(pool))])

    def pick(self, task: Task, rng: np.random.Generator) -> np.ndarray:
        """A drawn eligible image, decoded; an undecodable one is logged and redrawn (same stream)."""
        pool = self.eligible(task)
        for _ in range(MAX_REDRAWS):
            i = self.pick_index(task, rng)
            try:
                return self.store.get(i)
            except ImageReadError as exc:
                if self.store.reports_failures and i not in self._warned:
                    self._warned.add(i)
                    LOG.warning("skipping %s", exc)
        raise ImageReadError(f"{len(pool)} training images", f"{MAX_REDRAWS} drawn images in a row "
                             f"could not be decoded")

    def crop(self, task: Task, img: np.ndarray, rng: np.random.Generator) -> Sample:
        """Crop, augmentation, then degradation of the clean crop (so rain stays vertical)."""
        hp = self.patch_size * task.scale
        h, w = img.shape[:2]
        y, x = int(rng.integers(h - hp + 1)), int(rng.integers(w - hp + 1))
        hr = np.ascontiguousarray(_augment(img[y:y + hp, x:x + hp], *_draw_augment(rng)))
        return degrade(hr, task, rng, self.streaks), hr

    def sample(self, task: Task, rng: np.random.Generator) -> Sample:
        return self.crop(task, self.pick(task, rng), rng)


class PairFolder:
    """Real (degraded, clean) pairs matched by file name, kept in RAM, cropped aligned.

    The layouts and the name matching are those of ``src.pairs`` (shared with the benchmarks;
    none or several layouts raise ``PairLayoutError``). For SR the clean image must be ``scale``
    times the degraded one (extra HR rows/columns from a non-multiple size are cut); an
    ``LR/X{s}`` sub-folder is used when present. Unmatched, unreadable or misaligned files are
    logged and skipped.
    """

    def __init__(self, root: Union[str, os.PathLike], task: TaskLike, patch_size: int = PATCH_SIZE):
        self.root = Path(root)
        self.task = get_task(task) if isinstance(task, str) else task
        self.patch_size = patch_size
        self.found = find_pairs(self.root, self.task.scale)
        self.lq_dir, self.gt_dir = self.found.lq_dir, self.found.gt_dir
        self.pairs: List[Sample] = []
        self.names: List[str] = []
        self._load()

    def _load(self) -> None:
        s, p = self.task.scale, self.patch_size
        skipped = len(self.found.skipped)  # unpaired files, already logged by find_pairs
        for name, lq_path, gt_path in self.found.pairs:
            try:
                lq, gt = read_image(lq_path), read_image(gt_path)
            except ImageReadError as exc:
                LOG.warning("skipping %s", exc)
                skipped += 1
                continue
            lh, lw = lq.shape[:2]
            if gt.shape[0] < lh * s or gt.shape[1] < lw * s or gt.shape[0] >= (lh + 1) * s \
                    or gt.shape[1] >= (lw + 1) * s:
                LOG.warning("skipping %s: size %dx%d does not match %s %dx%d at scale %d",
                            lq_path, lw, lh, gt_path.name, gt.shape[1], gt.shape[0], s)
                skipped += 1
                continue
            if min(lh, lw) < p:
                skipped += 1
                continue
            self.pairs.append((lq, np.ascontiguousarray(gt[:lh * s, :lw * s])))
            self.names.append(name)
        LOG.info("loaded %d %s pairs from %s (%d skipped)", len(self.pairs), self.task.name,
                 self.root, skipped)

    @property
    def digest(self) -> str:
        h = hashlib.sha1()
        for (lq, gt), name in zip(self.pairs, self.names):
            h.update(name.encode())
            h.update(np.ascontiguousarray(lq).tobytes())
            h.update(np.ascontiguousarray(gt).tobytes())
        return h.hexdigest()

    def eligible(self, task: Task) -> np.ndarray:
        return np.arange(len(self.pairs) if task == self.task else 0, dtype=np.int64)

    def pick(self, task: Task, rng: np.random.Generator) -> Sample:
        """A drawn (degraded, clean) pair of the folder's task."""
        if task != self.task:
            raise ValueError(f"pair folder holds {self.task.name} pairs, not {task.name}")
        return self.pairs[int(rng.integers(len(self.pairs)))]

    def crop(self, task: Task, pair: Sample, rng: np.random.Generator) -> Sample:
        """LR crop of ``patch`` at (y, x) and HR crop of ``patch * s`` at (y * s, x * s)."""
        lq, gt = pair
        p, s = self.patch_size, task.scale
        h, w = lq.shape[:2]
        y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        aug = _draw_augment(rng)
        lq_crop = _augment(lq[y:y + p, x:x + p], *aug)
        gt_crop = _augment(gt[y * s:(y + p) * s, x * s:(x + p) * s], *aug)
        return np.ascontiguousarray(lq_crop), np.ascontiguousarray(gt_crop)

    def sample(self, task: Task, rng: np.random.Generator) -> Sample:
        return self.crop(task, self.pick(task, rng), rng)


__all__ = ["SyntheticPairs", "PairFolder", "degrade", "MAX_REDRAWS"]
