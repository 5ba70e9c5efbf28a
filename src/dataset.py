"""Training batches for IPT: deterministic, resumable and identical under data parallelism.

Images are decoded once and kept in RAM (decoding per crop was ~25x slower on this machine).
Every random choice is keyed by ``(seed, step, sample position)`` instead of a running
random state, so:

* a batch depends only on its global step: resuming at step k gives exactly the batches an
  uninterrupted run would have seen, and worker processes/threads cannot duplicate crops;
* a data-parallel rank computes only its slice of the global batch, and the W slices
  concatenated are the batch a single process would have drawn.

The task of a step is drawn from ``default_rng([seed, step])`` (the same on every rank; one
task per batch, as the model runs one head/tail per call). Sample j of the global batch uses
``default_rng([seed, step, j, 1])`` for image, crop, flips/rotation and degradation noise. The
trailing 1 is a stream tag: numpy pads short seed lists with zeros, so ``[seed, step, 0]``
would replay the task stream for sample 0.

Small images are not dropped wholesale: an image is used for the tasks whose HR patch
(48 * scale) fits in it, so T91's 78-191 px images still serve denoising/deraining/x2.
Only images smaller than the 48 px input patch are skipped (with a count).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from src.degradations import add_gaussian_noise, add_rain, bicubic_downsample
from src.image_io import ImageReadError, list_images, read_image
from src.tasks import Task, get_task

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
from src.tasks import PATCH as PATCH_SIZE  # noqa: E402  the network's input tile
SAMPLE_STREAM = 1        # tag appended to per-sample seeds (see module docstring)
COLUMNS = ["lr", "hr", "task"]

# (degraded folder, clean folder) names of the supported paired layouts, tried in order.
PAIR_LAYOUTS: Tuple[Tuple[str, str], ...] = (("LR", "HR"), ("rainy", "norain"), ("input", "target"))

TaskLike = Union[str, Task]
Sample = Tuple[np.ndarray, np.ndarray]  # (degraded HWC, clean HWC), before CHW conversion


# ----------------------------------------------------------------------------- loading


def resolve_data_path(path: Union[str, os.PathLike]) -> Path:
    """A configured path as given (relative to the cwd), else relative to the repo root."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def load_image_folder(root: Union[str, os.PathLike], min_size: int = 0) -> List[np.ndarray]:
    """Decode every image under ``root`` (recursive) once into HWC uint8 RGB arrays.

    Gray files become 3 channels, alpha is dropped and 16-bit samples are scaled (all by
    ``read_image``). Files without an image extension are ignored; undecodable files are
    logged as one-line warnings and skipped; images with a side below ``min_size`` are
    skipped and counted.
    """
    images: List[np.ndarray] = []
    unreadable = small = 0
    for path in list_images(root, recursive=True):
        try:
            img = read_image(path)
        except ImageReadError as exc:
            LOG.warning("skipping %s", exc)
            unreadable += 1
            continue
        if min(img.shape[:2]) < min_size:
            small += 1
            continue
        images.append(img)
    LOG.info("loaded %d training images from %s (%d unreadable, %d smaller than %d px skipped)",
             len(images), root, unreadable, small, min_size)
    return images


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


def degrade(clean: np.ndarray, task: Task, rng: np.random.Generator) -> np.ndarray:
    """The network input for a clean HR patch: bicubic LR (uint8), noisy (float32) or rainy (uint8).

    Noise is clipped and kept float (unrounded), as in the official test protocol.
    """
    if task.kind == "sr":
        return bicubic_downsample(clean, task.scale)
    if task.kind == "denoise":
        return add_gaussian_noise(clean, task.sigma, rng=rng)
    if task.kind == "derain":
        return add_rain(clean, rng=rng)
    raise ValueError(f"unknown task kind {task.kind!r}")


class SyntheticPairs:
    """Clean images degraded on the fly; serves any task whose HR patch fits an image."""

    def __init__(self, images: Sequence[np.ndarray], patch_size: int = PATCH_SIZE):
        self.images = list(images)
        self.patch_size = patch_size
        self._eligible: Dict[int, np.ndarray] = {}

    def eligible(self, task: Task) -> np.ndarray:
        """Indices of images at least (patch * scale) on both sides."""
        hr = self.patch_size * task.scale
        if task.scale not in self._eligible:
            self._eligible[task.scale] = np.array(
                [i for i, im in enumerate(self.images) if min(im.shape[:2]) >= hr], dtype=np.int64)
        return self._eligible[task.scale]

    def sample(self, task: Task, rng: np.random.Generator) -> Sample:
        """Image, crop, augmentation, then degradation of the clean crop (so rain stays vertical)."""
        pool = self.eligible(task)
        img = self.images[int(pool[rng.integers(len(pool))])]
        hp = self.patch_size * task.scale
        h, w = img.shape[:2]
        y, x = int(rng.integers(h - hp + 1)), int(rng.integers(w - hp + 1))
        hr = np.ascontiguousarray(_augment(img[y:y + hp, x:x + hp], *_draw_augment(rng)))
        return degrade(hr, task, rng), hr


# ----------------------------------------------------------------------------- pairs


_RAIN_PREFIX = re.compile(r"^(no)?rain[-_]", re.IGNORECASE)


def _pair_key(path: Path, root: Path, scale: int = 1) -> str:
    """Match key: relative stem without an EDSR ``x{scale}`` suffix or a ``rain-``/``norain-`` prefix."""
    rel = path.relative_to(root).with_suffix("")
    stem = _RAIN_PREFIX.sub("", rel.name)
    if scale > 1 and stem.lower().endswith(f"x{scale}"):
        stem = stem[: -len(f"x{scale}")]
    return (rel.parent / stem).as_posix().lower()


def find_pair_layout(root: Union[str, os.PathLike]) -> Optional[Tuple[Path, Path]]:
    """(degraded dir, clean dir) when ``root`` holds one of PAIR_LAYOUTS, else None.

    Also accepts the Rain100L/PReNet layout: ``rainy/`` inputs with clean ``norain-*`` in root.
    """
    root = Path(root)
    for lq, gt in PAIR_LAYOUTS:
        if (root / lq).is_dir() and (root / gt).is_dir():
            return root / lq, root / gt
    if (root / "rainy").is_dir() and any(p.name.lower().startswith("norain") for p in root.iterdir()):
        return root / "rainy", root
    return None


class PairFolder:
    """Real (degraded, clean) pairs matched by file name, kept in RAM, cropped aligned.

    For SR the clean image must be ``scale`` times the degraded one (extra HR rows/columns
    from a non-multiple size are cut); an ``LR/X{s}`` sub-folder is used when present.
    Unmatched, unreadable or misaligned files are logged and skipped.
    """

    def __init__(self, root: Union[str, os.PathLike], task: TaskLike, patch_size: int = PATCH_SIZE):
        self.root = Path(root)
        self.task = get_task(task) if isinstance(task, str) else task
        self.patch_size = patch_size
        layout = find_pair_layout(self.root)
        if layout is None:
            raise FileNotFoundError(
                f"{self.root}: no paired layout ({', '.join('/'.join(p) for p in PAIR_LAYOUTS)})")
        lq_dir, gt_dir = layout
        s = self.task.scale
        if (lq_dir / f"X{s}").is_dir():
            lq_dir = lq_dir / f"X{s}"
        self.lq_dir, self.gt_dir = lq_dir, gt_dir
        self.pairs: List[Sample] = []
        self.names: List[str] = []
        self._load()

    def _load(self) -> None:
        recursive = self.gt_dir != self.root  # PReNet layout: clean files sit next to rainy/
        clean = {_pair_key(p, self.gt_dir): p for p in list_images(self.gt_dir, recursive=recursive)}
        s, p = self.task.scale, self.patch_size
        skipped = 0
        for lq_path in list_images(self.lq_dir):
            key = _pair_key(lq_path, self.lq_dir, s)
            gt_path = clean.get(key)
            if gt_path is None:
                LOG.warning("skipping %s: no clean file matching '%s' in %s", lq_path, key, self.gt_dir)
                skipped += 1
                continue
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
            self.names.append(key)
        LOG.info("loaded %d %s pairs from %s (%d skipped)", len(self.pairs), self.task.name,
                 self.root, skipped)

    def eligible(self, task: Task) -> np.ndarray:
        return np.arange(len(self.pairs) if task == self.task else 0, dtype=np.int64)

    def sample(self, task: Task, rng: np.random.Generator) -> Sample:
        """LR crop of ``patch`` at (y, x) and HR crop of ``patch * s`` at (y * s, x * s)."""
        if task != self.task:
            raise ValueError(f"pair folder holds {self.task.name} pairs, not {task.name}")
        lq, gt = self.pairs[int(rng.integers(len(self.pairs)))]
        p, s = self.patch_size, task.scale
        h, w = lq.shape[:2]
        y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        aug = _draw_augment(rng)
        lq_crop = _augment(lq[y:y + p, x:x + p], *aug)
        gt_crop = _augment(gt[y * s:(y + p) * s, x * s:(x + p) * s], *aug)
        return np.ascontiguousarray(lq_crop), np.ascontiguousarray(gt_crop)


# ----------------------------------------------------------------------------- batches


def _chw(batch: List[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2), dtype=np.float32)


_CV2_CONFIGURED_PID = None


def _configure_worker() -> None:
    """cv2 threads off once per process (forked workers would otherwise oversubscribe 2 cores)."""
    global _CV2_CONFIGURED_PID
    if _CV2_CONFIGURED_PID != os.getpid():
        cv2.setNumThreads(0)
        _CV2_CONFIGURED_PID = os.getpid()


class TrainBatches:
    """Random-access source of whole batches: ``self[i]`` is the batch of step ``start_step + i``.

    Returns ``(lr, hr, task_idx)``: lr float32 (b, 3, 48, 48), hr float32 (b, 3, 48s, 48s),
    values 0..255 (not normalised), task_idx an int32 scalar, the slot of the task in
    ``tasks`` (the model's task list). ``batch_size`` is the GLOBAL batch; rank r of W returns
    samples [r*B/W, (r+1)*B/W). ``active`` (default: all of ``tasks``) are the tasks drawn.
    """

    def __init__(self, source, tasks: Sequence[TaskLike], batch_size: int, steps: int, seed: int,
                 active: Optional[Sequence[TaskLike]] = None, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, patch_size: int = PATCH_SIZE):
        self.source = source
        self.tasks = tuple(get_task(t) if isinstance(t, str) else t for t in tasks)
        chosen = self.tasks if active is None else tuple(
            get_task(t) if isinstance(t, str) else t for t in active)
        missing = [t.name for t in chosen if t not in self.tasks]
        if missing:
            raise ValueError(f"task(s) {missing} are not in the model's task list "
                             f"{[t.name for t in self.tasks]}")
        empty = [t.name for t in chosen if len(source.eligible(t)) == 0]
        if empty:
            raise ValueError(f"no training image is large enough for task(s) {empty} "
                             f"(HR patch {patch_size} * scale)")
        self.active = chosen
        self.slots = tuple(self.tasks.index(t) for t in chosen)
        batch_size, world_size, rank = int(batch_size), int(world_size), int(rank)
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (the contrastive loss compares images), got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world_size {world_size}")
        if batch_size // world_size < 2:
            LOG.warning("each rank gets %d sample(s) per step; the contrastive loss needs >= 2",
                        batch_size // world_size)
        if not 0 <= int(start_step) <= int(steps):
            raise ValueError(f"start_step {start_step} outside 0..steps ({steps})")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.local = batch_size // world_size
        self.steps, self.start_step, self.seed = int(steps), int(start_step), int(seed)
        self.patch_size = patch_size

    def __len__(self) -> int:
        return self.steps - self.start_step

    def task_of(self, step: int) -> int:
        """Position in ``active`` of the task trained at ``step`` (same on every rank)."""
        return int(np.random.default_rng([self.seed, int(step)]).integers(len(self.active)))

    def batch(self, step: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This rank's part of the global batch of ``step``."""
        _configure_worker()
        k = self.task_of(step)
        task = self.active[k]
        lrs, hrs = [], []
        first = self.rank * self.local
        for j in range(first, first + self.local):
            rng = np.random.default_rng([self.seed, int(step), j, SAMPLE_STREAM])
            lr, hr = self.source.sample(task, rng)
            lrs.append(lr)
            hrs.append(hr)
        return _chw(lrs), _chw(hrs), np.array(self.slots[k], dtype=np.int32)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} steps")
        return self.batch(self.start_step + index)


def build_train_source(cfg, tasks: Sequence[TaskLike], rank: int = 0, world_size: int = 1,
                       start_step: int = 0) -> TrainBatches:
    """TrainBatches from the config: ``train_mode`` pretrain (all ``tasks``, synthetic) or
    finetune (``cfg.task`` only; real pairs when ``train_path`` has a paired layout, else
    synthetic degradation of the clean images).
    """
    root = resolve_data_path(cfg.train_path)
    if not root.is_dir():
        raise NotADirectoryError(f"train_path not found: {cfg.train_path}")
    patch = cfg.patch_size
    mode = cfg.train_mode
    if mode == "pretrain":
        active = None
        source = SyntheticPairs(load_image_folder(root, min_size=patch), patch)
    elif mode == "finetune":
        task = get_task(cfg.task)
        active = [task]
        if find_pair_layout(root) is not None:
            source = PairFolder(root, task, patch)
        else:
            source = SyntheticPairs(load_image_folder(root, min_size=patch), patch)
    else:
        raise ValueError(f"train_mode must be pretrain or finetune, not {mode!r}")
    return TrainBatches(source, tasks, cfg.batch_size, cfg.steps, cfg.seed,
                        active=active, rank=rank, world_size=world_size, start_step=start_step,
                        patch_size=patch)


def create_train_dataset(cfg, tasks: Sequence[TaskLike], rank: int = 0, world_size: int = 1,
                         start_step: int = 0, processes: bool = False,
                         source: Optional[TrainBatches] = None):
    """GeneratorDataset over :class:`TrainBatches`, in step order, columns lr/hr/task.

    ``cfg.workers`` parallel workers (0 means one); threads by default, because on this
    2-core machine worker processes were no faster (see bench/bench_data.py) and cost a
    fork plus shared-memory copies. Sharding is done inside the source (each rank draws its
    own slice of every global batch), so no num_shards/shard_id here.
    """
    import mindspore.dataset as ds

    if source is None:
        source = build_train_source(cfg, tasks, rank, world_size, start_step)
    workers = cfg.workers
    return ds.GeneratorDataset(source, column_names=COLUMNS, shuffle=False,
                               num_parallel_workers=workers,
                               python_multiprocessing=bool(processes))


__all__ = [
    "load_image_folder", "SyntheticPairs", "PairFolder", "find_pair_layout", "TrainBatches",
    "build_train_source", "create_train_dataset", "degrade", "resolve_data_path", "COLUMNS",
    "PATCH_SIZE", "PAIR_LAYOUTS",
]
