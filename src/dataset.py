"""Training batches for IPT: deterministic, resumable, identical under data parallelism, streamed.

Every random choice is keyed by ``(seed, step, position)`` instead of a running random state:

* a batch depends only on its global step: resuming at step k gives exactly the batches an
  uninterrupted run would have seen, and worker processes/threads cannot duplicate crops;
* a data-parallel rank computes only its slice of the global batch, and the W slices
  concatenated are the batch a single process would have drawn.

The task of a step is drawn from ``default_rng([seed, step])`` (the same on every rank; one
task per batch, as the model runs one head/tail per call). Samples come in groups of
``crops_per_image``: group g of a step draws its image from ``default_rng([seed, step, g, 2])``
(decoded once), and sample j of the global batch draws crop, flips/rotation and degradation
noise from ``default_rng([seed, step, j, 1])``. The trailing stream tags keep the streams apart
(numpy pads short seed lists with zeros, so ``[seed, step, 0]`` would replay the task stream).

Images come from an :class:`ImageStore`: decoded into RAM once (small folders: decoding per crop
was ~25x slower) or decoded on demand from the folder's cached index (large folders: memory flat
in the corpus size). Both give identical batches, because both draw from the same index.

Sources (clean images degraded on the fly, or real pairs) are in src/train_sources.py.
Small images are not dropped wholesale: an image serves the tasks whose HR patch
(48 * scale) fits in it, so T91's 78-191 px images still serve denoising/deraining/x2.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from src.image_index import ImageIndex, open_index
from src.image_store import FolderImages, RamImages, RecordSizes
from src.mindrecord_data import is_mindrecord_dir, mindrecord_dataset, open_mindrecord, read_all
from src.pairs import has_pair_layout
from src.tasks import PATCH as PATCH_SIZE
from src.tasks import Task, get_task
from src.train_sources import PairFolder, SyntheticPairs

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_STREAM = 1        # tag appended to per-sample seeds (see module docstring)
IMAGE_STREAM = 2         # tag appended to per-group seeds
COLUMNS = ["lr", "hr", "task"]

TaskLike = Union[str, Task]


# ----------------------------------------------------------------------------- images


def resolve_data_path(path: Union[str, os.PathLike]) -> Path:
    """A configured path as given (relative to the cwd), else relative to the repo root."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


# ----------------------------------------------------------------------------- batches


def _chw(batch: List[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2), dtype=np.float32)


_CV2_CONFIGURED_PID = None


def _configure_worker() -> None:
    """cv2 threads off once per process (forked workers would otherwise oversubscribe the cores)."""
    global _CV2_CONFIGURED_PID
    if _CV2_CONFIGURED_PID != os.getpid():
        cv2.setNumThreads(0)
        _CV2_CONFIGURED_PID = os.getpid()


def _as_tasks(tasks: Sequence[TaskLike]) -> Tuple[Task, ...]:
    return tuple(get_task(t) if isinstance(t, str) else t for t in tasks)


class TrainBatches:
    """Random-access source of whole batches: ``self[i]`` is the batch of step ``start_step + i``.

    Returns ``(lr, hr, task_idx)``: lr float32 (b, 3, 48, 48), hr float32 (b, 3, 48s, 48s),
    values 0..255 (not normalised), task_idx an int32 scalar, the slot of the task in
    ``tasks`` (the model's task list). ``batch_size`` is the GLOBAL batch; rank r of W returns
    samples [r*B/W, (r+1)*B/W). ``active`` (default: all of ``tasks``) are the tasks drawn.
    ``crops_per_image`` consecutive samples share one drawn (and decoded) image.
    """

    def __init__(self, source, tasks: Sequence[TaskLike], batch_size: int, steps: int, seed: int,
                 active: Optional[Sequence[TaskLike]] = None, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, patch_size: int = PATCH_SIZE, crops_per_image: int = 1):
        self.source = source
        self.tasks = _as_tasks(tasks)
        chosen = self.tasks if active is None else _as_tasks(active)
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
        if int(crops_per_image) < 1:
            raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.local = batch_size // world_size
        self.steps, self.start_step, self.seed = int(steps), int(start_step), int(seed)
        self.patch_size = patch_size
        self.crops_per_image = int(crops_per_image)

    def __len__(self) -> int:
        return self.steps - self.start_step

    @property
    def data_digest(self) -> str:
        """What the batches depend on besides the seed: the corpus and how it is sampled."""
        key = f"{self.source.digest}|{self.crops_per_image}|{self.patch_size}|{[t.name for t in self.active]}"
        return hashlib.sha1(key.encode()).hexdigest()

    def task_of(self, step: int) -> int:
        """Position in ``active`` of the task trained at ``step`` (same on every rank)."""
        return int(np.random.default_rng([self.seed, int(step)]).integers(len(self.active)))

    @property
    def groups(self) -> range:
        """The image groups this rank's samples belong to (a group may straddle two ranks)."""
        first, last, c = self.rank * self.local, (self.rank + 1) * self.local, self.crops_per_image
        return range(first // c, (last - 1) // c + 1)

    def _group_rng(self, step: int, group: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(step), group, IMAGE_STREAM])

    def plan(self, step: int) -> List[int]:
        """The image index of each of this rank's groups at ``step``, without decoding (MindRecord
        reads exactly these records)."""
        task = self.active[self.task_of(step)]
        return [self.source.pick_index(task, self._group_rng(step, g)) for g in self.groups]

    def batch(self, step: int, images: Optional[Sequence[np.ndarray]] = None
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This rank's part of the global batch of ``step``: each group's image decoded once.

        ``images``: the groups' images already decoded (in ``groups`` order, as ``plan`` drew them).
        """
        _configure_worker()
        k = self.task_of(step)
        task = self.active[k]
        lrs, hrs = [], []
        first, last, c = self.rank * self.local, (self.rank + 1) * self.local, self.crops_per_image
        for n, group in enumerate(self.groups):
            image = self.source.pick(task, self._group_rng(step, group)) if images is None else images[n]
            for j in range(max(first, group * c), min(last, (group + 1) * c)):
                lr, hr = self.source.crop(task, image, np.random.default_rng([self.seed, int(step), j, SAMPLE_STREAM]))
                lrs.append(lr)
                hrs.append(hr)
        return _chw(lrs), _chw(hrs), np.array(self.slots[k], dtype=np.int32)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} steps")
        return self.batch(self.start_step + index)


def choose_source_kind(cfg, index: ImageIndex) -> str:
    """'ram' or 'stream' (the folder or its MindRecord): ``cfg.data_source``, or for 'auto' RAM while the decoded corpus fits
    in ``cfg.ram_limit_mb``."""
    if cfg.data_source != "auto":
        return cfg.data_source
    return "ram" if index.decoded_bytes() <= cfg.ram_limit_mb * 2 ** 20 else "stream"


def _crops_per_image(cfg, kind: str) -> int:
    """``cfg.crops_per_image``; 0 = 1 from RAM (decoding is free), 4 when streaming."""
    if cfg.crops_per_image:
        return cfg.crops_per_image
    return 1 if kind == "ram" else 4


def build_train_source(cfg, tasks: Sequence[TaskLike], rank: int = 0, world_size: int = 1,
                       start_step: int = 0) -> TrainBatches:
    """TrainBatches from the config: ``train_mode`` pretrain (all ``tasks``, synthetic) or
    finetune (``cfg.task`` only; real pairs when ``train_path`` has a paired layout, else
    synthetic degradation of the clean images). Clean images come from RAM or stream from the
    folder (``cfg.data_source``), through the folder's cached index (``cfg.data_index``).
    """
    root = resolve_data_path(cfg.train_path)
    if not root.is_dir():
        raise NotADirectoryError(f"train_path not found: {cfg.train_path}")
    patch = cfg.patch_size
    mode = cfg.train_mode
    if mode not in ("pretrain", "finetune"):
        raise ValueError(f"train_mode must be pretrain or finetune, not {mode!r}")
    active = None if mode == "pretrain" else [get_task(cfg.task)]
    if mode == "finetune" and has_pair_layout(root):
        source, kind = PairFolder(root, active[0], patch), "ram"
    else:
        if is_mindrecord_dir(root):
            files, index = open_mindrecord(root)
            kind = choose_source_kind(cfg, index)
            if kind == "ram":
                store = RamImages(read_all(files, index), index.heights, index.widths, list(index.rel_paths()),
                                  index.digest)
            else:
                store, kind = RecordSizes(index, files), "mindrecord"
        else:
            index = open_index(root, cfg.data_index or None)
            kind = choose_source_kind(cfg, index)
            store = RamImages.from_index(index, patch) if kind == "ram" else FolderImages(index)
        streaks = None
        if cfg.rain_streaks:
            streaks = RamImages.from_index(open_index(resolve_data_path(cfg.rain_streaks)))
        source = SyntheticPairs(store, patch, streaks)
        how = {"ram": "decoded into RAM", "stream": "streamed from the folder",
               "mindrecord": "streamed from MindRecord"}[kind]
        LOG.info("training images: %d from %s, %s (%.2f GB decoded)", len(index), root, how,
                 index.decoded_bytes() / 1e9)
    batches = TrainBatches(source, tasks, cfg.batch_size, cfg.steps, cfg.seed, active=active, rank=rank,
                           world_size=world_size, start_step=start_step, patch_size=patch,
                           crops_per_image=_crops_per_image(cfg, kind))
    batches.kind = kind
    return batches


def create_train_dataset(cfg, tasks: Sequence[TaskLike], rank: int = 0, world_size: int = 1,
                         start_step: int = 0, processes: Optional[bool] = None,
                         source: Optional[TrainBatches] = None):
    """GeneratorDataset over :class:`TrainBatches`, in step order, columns lr/hr/task.

    ``cfg.workers`` parallel workers, each computing whole batches. ``processes`` (default
    ``cfg.worker_processes``; null = processes when streaming, threads for RAM images, where
    forking buys nothing and costs shared-memory copies). Sharding is done inside the source
    (each rank draws its own slice of every global batch), so no num_shards/shard_id here.
    """
    import mindspore.dataset as ds

    if source is None:
        source = build_train_source(cfg, tasks, rank, world_size, start_step)
    kind = getattr(source, "kind", "ram")
    if processes is None:
        processes = cfg.worker_processes
        if processes is None:
            processes = kind != "ram"
    if kind == "mindrecord":
        return mindrecord_dataset(source, source.source.store.files, cfg.workers, processes)
    return ds.GeneratorDataset(source, column_names=COLUMNS, shuffle=False,
                               num_parallel_workers=cfg.workers,
                               python_multiprocessing=bool(processes))


__all__ = ["TrainBatches", "build_train_source", "create_train_dataset", "resolve_data_path",
           "choose_source_kind", "COLUMNS"]
