"""A cached index of a training image folder: paths and sizes, read from file headers.

Streaming a large corpus (ImageNet: 1.28 M files) needs the image list and every image's size
before the first step, to draw crops that fit, without decoding anything. The index is built
once, from headers (``image_io.image_header``: a few bytes per file), stored as one ``.npz``
and reused while the folder is unchanged.

* Paths are one UTF-8 byte buffer plus offsets, not a list of Python strings, so forked data
  workers share the index pages instead of copying them (no per-path refcounts to touch).
* Staleness: the index stores every directory's modification time. Adding, removing or
  renaming a file or a sub-folder changes its parent's mtime, so checking the stored
  directories (1,001 stats for ImageNet) detects it; rewriting a file in place does not, and
  ``rebuild=True`` forces a new index.
* Quirks are settled at build time with a logged skip: files that are not images (by content,
  whatever their extension), truncated JPEGs, headers that give no size. CMYK and gray JPEGs
  and PNGs named ``.JPEG`` are kept (they decode correctly).
* Concurrency: several ranks may open the same index. The first takes a lock file and builds;
  the others wait for it. Ranks on other machines build their own copy from their own disk,
  with their own cache path, and ``digest`` lets the trainer check that all copies agree.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from src.image_io import IMAGE_EXTENSIONS, ImageReadError, image_header, jpeg_is_truncated, read_image
from src.utils import Progress, publish, shown_path

LOG = logging.getLogger(__name__)

INDEX_VERSION = 1
STALE_LOCK_SECONDS = 300.0   # a builder refreshes its lock at least this often while it works
MAX_LOGGED_SKIPS = 20

PathLike = Union[str, os.PathLike]


def default_cache_dir() -> Path:
    """``$IPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ipt``, else ``~/.cache/ipt``: per machine."""
    if os.environ.get("IPT_CACHE_DIR"):
        return Path(os.environ["IPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ipt"


def default_index_path(root: PathLike) -> Path:
    """Where the index of ``root`` is cached when no path is given (keyed by the real path)."""
    real = os.path.realpath(root)
    key = hashlib.sha1(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return default_cache_dir() / "index" / f"{Path(real).name or 'root'}-{key}.npz"


def _walk(root: Path) -> Tuple[List[str], List[str], List[int]]:
    """Sorted relative image paths (by extension), directories and their mtimes (ns)."""
    files: List[str] = []
    dirs: List[str] = []
    mtimes: List[int] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel if rel else root
        dirs.append(rel)
        mtimes.append(os.stat(folder).st_mtime_ns)
        subdirs = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                child = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir():
                    subdirs.append(child)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                    files.append(child)
        stack.extend(sorted(subdirs, reverse=True))
    return sorted(files), dirs, mtimes


def probe_image(path: PathLike) -> Tuple[int, int]:
    """(width, height) of a usable image file, from its header; raises ImageReadError otherwise.

    Sizes come from the header when the format has one we read (PNG, JPEG, BMP, WebP), else
    from a full decode (TIFF). A JPEG without an end-of-image marker is rejected here, once,
    rather than decoded half gray at every sample.
    """
    head = image_header(path)
    if head is None:
        img = read_image(path)
        return int(img.shape[1]), int(img.shape[0])
    if head.width <= 0 or head.height <= 0:
        raise ImageReadError(path, f"header gives size {head.width}x{head.height}")
    with open(path, "rb") as fh:
        if fh.read(2) == b"\xff\xd8":
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(size - 64, 0))
            if jpeg_is_truncated(fh.read(64)):
                raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    return int(head.width), int(head.height)


def _probe_or_reason(path: Path) -> Union[Tuple[int, int], str]:
    try:
        return probe_image(path)
    except ImageReadError as err:
        return err.reason
    except OSError as err:
        return err.strerror or type(err).__name__


class ImageIndex:
    """The usable images of a folder: relative paths, widths and heights, in sorted path order."""

    def __init__(self, root: PathLike, names: np.ndarray, offsets: np.ndarray, widths: np.ndarray,
                 heights: np.ndarray, dirs: Sequence[str] = (), mtimes: Sequence[int] = (),
                 skipped: Sequence[str] = ()):
        self.root = Path(root)
        self._names, self._offsets = names, offsets
        self.widths = np.asarray(widths, dtype=np.int32)
        self.heights = np.asarray(heights, dtype=np.int32)
        self.dirs, self.mtimes = list(dirs), list(mtimes)
        self.skipped = list(skipped)

    @classmethod
    def from_lists(cls, root: PathLike, rel_paths: Sequence[str], sizes: Sequence[Tuple[int, int]],
                   **kwargs) -> "ImageIndex":
        encoded = [p.encode("utf-8", "surrogateescape") for p in rel_paths]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        names = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        sizes_arr = np.asarray(sizes, dtype=np.int32).reshape(-1, 2)
        return cls(root, names, offsets, sizes_arr[:, 0], sizes_arr[:, 1], **kwargs)

    def __len__(self) -> int:
        return len(self.widths)

    def rel_path(self, i: int) -> str:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._names[start:end].tobytes().decode("utf-8", "surrogateescape")

    def path(self, i: int) -> Path:
        return self.root / self.rel_path(i)

    def rel_paths(self) -> Iterator[str]:
        return (self.rel_path(i) for i in range(len(self)))

    @property
    def digest(self) -> str:
        """Hash of the image list and sizes: equal on every machine holding the same corpus."""
        h = hashlib.sha1()
        for arr in (self._names, self._offsets, self.widths, self.heights):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def decoded_bytes(self) -> int:
        """RAM the decoded corpus would take (uint8 RGB)."""
        return int(np.sum(self.widths.astype(np.int64) * self.heights * 3))

    def is_current(self) -> bool:
        """True while no indexed directory was changed (see the module docstring)."""
        try:
            return all(os.stat(self.root / d if d else self.root).st_mtime_ns == m
                       for d, m in zip(self.dirs, self.mtimes))
        except OSError:
            return False

    def save(self, path: PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, version=np.int64(INDEX_VERSION), root=np.array(os.path.realpath(self.root)),
                     names=self._names, offsets=self._offsets, widths=self.widths, heights=self.heights,
                     dirs=np.array(self.dirs, dtype=str), mtimes=np.array(self.mtimes, dtype=np.int64),
                     skipped=np.array(self.skipped, dtype=str))
        publish(tmp, path)
        return path

    @classmethod
    def load(cls, path: PathLike, root: Optional[PathLike] = None) -> "ImageIndex":
        """Read a saved index (no pickles); ``root`` relocates it (the folder moved or is mounted
        elsewhere), else the root stored at build time is used."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != INDEX_VERSION:
                raise ValueError(f"{path}: index version {int(data['version'])}, expected {INDEX_VERSION}")
            return cls(root if root is not None else str(data["root"]), data["names"], data["offsets"],
                       data["widths"], data["heights"], [str(d) for d in data["dirs"]],
                       [int(m) for m in data["mtimes"]], [str(s) for s in data["skipped"]])


def build_index(root: PathLike, threads: int = 8, on_chunk=None) -> ImageIndex:
    """Walk ``root`` and read every image header (threads: header reads are I/O-bound).

    ``on_chunk()`` is called after every few thousand files (the builder's lock heartbeat).
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    start = time.perf_counter()
    files, dirs, mtimes = _walk(root)
    LOG.info("indexing %d image files in %d folders under %s", len(files), len(dirs), root)
    progress = Progress(len(files), "indexed", logger=LOG)
    kept: List[str] = []
    sizes: List[Tuple[int, int]] = []
    skipped: List[str] = []
    chunk = 4096
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for first in range(0, len(files), chunk):
            names = files[first:first + chunk]
            for rel, result in zip(names, pool.map(_probe_or_reason, [root / n for n in names])):
                if isinstance(result, str):
                    if len(skipped) < MAX_LOGGED_SKIPS:
                        LOG.warning("skipping %s: %s", root / rel, result)
                    skipped.append(f"{rel}: {result}")
                else:
                    kept.append(rel)
                    sizes.append(result)
            progress.update(first + len(names))
            if on_chunk is not None:
                on_chunk()
    if len(skipped) > MAX_LOGGED_SKIPS:
        LOG.warning("... %d more files skipped (listed in the index's 'skipped')",
                    len(skipped) - MAX_LOGGED_SKIPS)
    LOG.info("indexed %d images (%d skipped) in %.1f s", len(kept), len(skipped), time.perf_counter() - start)
    return ImageIndex.from_lists(root, kept, sizes, dirs=dirs, mtimes=mtimes, skipped=skipped)


def _lock_is_stale(lock: Path) -> bool:
    try:
        return time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS
    except FileNotFoundError:
        return False


def open_index(root: PathLike, index_path: Optional[PathLike] = None, rebuild: bool = False,
               wait_seconds: float = 4 * 3600.0) -> ImageIndex:
    """The index of ``root``: the cached one while current, else built and cached.

    Safe to call from many processes at once: one builds under ``<index>.lock``, the others wait.
    """
    root = Path(root)
    path = Path(index_path) if index_path else default_index_path(root)
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + wait_seconds
    while True:
        if path.is_file() and not rebuild:
            try:
                index = ImageIndex.load(path, root)
            except (OSError, ValueError, KeyError) as err:
                LOG.warning("rebuilding the index %s: %s", shown_path(path), err)
            else:
                if index.is_current():
                    LOG.info("image index %s: %d images of %s", shown_path(path), len(index), root)
                    return index
                LOG.info("the index %s is out of date (%s changed): rebuilding", shown_path(path), root)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(lock):
                LOG.warning("removing the stale index lock %s", shown_path(lock))
                lock.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {wait_seconds:.0f} s for another process to build {path} "
                                   f"(remove {lock} if no build is running)")
            time.sleep(1.0)
            rebuild = False  # the other process is rebuilding it
            continue
        try:
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            os.close(fd)
            index = build_index(root, on_chunk=lambda: os.utime(lock))
            index.save(path)
            LOG.info("saved the image index %s", shown_path(path))
            return index
        finally:
            lock.unlink(missing_ok=True)


__all__ = ["ImageIndex", "build_index", "open_index", "probe_image", "default_index_path",
           "default_cache_dir", "INDEX_VERSION"]
