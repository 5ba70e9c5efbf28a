"""Training images behind one interface: decoded into RAM once, decoded per sample from a folder,
or (sizes only) a MindRecord corpus read by its own pipeline.

Every store is built from an ``ImageIndex`` (src/image_index.py), so all of them agree on the
image list and sizes, and the keyed sampler in src/dataset.py draws the same images from each.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import List, Optional, Sequence, Union

import numpy as np

from src.image_index import ImageIndex, open_index
from src.image_io import ImageReadError, read_image

LOG = logging.getLogger(__name__)


class ImageStore:
    """Random access to a corpus of clean images: sizes up front, pixels by index.

    ``get(i)`` returns HWC uint8 RGB (gray replicated, alpha dropped, 16-bit scaled: all by
    ``read_image``) or raises ImageReadError.
    """

    heights: np.ndarray
    widths: np.ndarray
    digest: str               # equal on every machine holding the same corpus (the index's digest)
    reports_failures = True   # False: the store logged its unreadable files already

    def __len__(self) -> int:
        return len(self.heights)

    def get(self, i: int) -> np.ndarray:
        raise NotImplementedError


class RamImages(ImageStore):
    """Every image decoded once and kept in RAM; images below ``min_size`` are not decoded."""

    reports_failures = False

    def __init__(self, images: Sequence[Optional[np.ndarray]], heights=None, widths=None,
                 names: Optional[Sequence[str]] = None, digest: Optional[str] = None):
        self.images = list(images)
        known = [im for im in self.images if im is not None]
        self.heights = np.asarray(heights if heights is not None else [im.shape[0] for im in known], np.int64)
        self.widths = np.asarray(widths if widths is not None else [im.shape[1] for im in known], np.int64)
        self.names = list(names) if names is not None else [f"#{i}" for i in range(len(self.images))]
        if digest is None:
            h = hashlib.sha1()
            for im in known:
                h.update(np.ascontiguousarray(im).tobytes())
            digest = h.hexdigest()
        self.digest = digest

    @classmethod
    def from_index(cls, index: ImageIndex, min_size: int = 0) -> "RamImages":
        images: List[Optional[np.ndarray]] = []
        unreadable = 0
        for i in range(len(index)):
            if min(index.widths[i], index.heights[i]) < min_size:
                images.append(None)  # never eligible: not decoded
                continue
            try:
                img = read_image(index.path(i))
            except ImageReadError as exc:
                LOG.warning("skipping %s", exc)
                unreadable += 1
                img = None
            images.append(img)
        LOG.info("decoded %d training images from %s into RAM (%d unreadable)",
                 sum(im is not None for im in images), index.root, unreadable)
        return cls(images, index.heights, index.widths, list(index.rel_paths()), index.digest)

    def get(self, i: int) -> np.ndarray:
        img = self.images[i]
        if img is None:
            raise ImageReadError(self.names[i], "not decodable")
        return img


class FolderImages(ImageStore):
    """Images decoded on demand from the folder (the index gives sizes): memory flat in N."""

    def __init__(self, index: ImageIndex):
        self.index = index
        self.heights, self.widths = index.heights, index.widths
        self.digest = index.digest

    def get(self, i: int) -> np.ndarray:
        return read_image(self.index.path(i))


class RecordSizes(ImageStore):
    """A MindRecord corpus as the sampler sees it: sizes only. Pixels arrive through the
    MindDataset pipeline (src/mindrecord_data.py), in the order ``TrainBatches.plan`` drew."""

    def __init__(self, index: ImageIndex, files: Sequence[str]):
        self.index, self.files = index, list(files)
        self.heights, self.widths = index.heights, index.widths
        self.digest = index.digest

    def get(self, i: int) -> np.ndarray:
        raise RuntimeError("MindRecord images are read by mindrecord_dataset, not one by one")


def load_image_folder(root: Union[str, os.PathLike], min_size: int = 0,
                      index_path: Optional[Union[str, os.PathLike]] = None) -> RamImages:
    """Decode every image under ``root`` (recursive) once, through the folder's cached index.

    Files that are not images, truncated JPEGs and undecodable files are logged and skipped.
    """
    return RamImages.from_index(open_index(root, index_path), min_size)


__all__ = ["ImageStore", "RamImages", "FolderImages", "RecordSizes", "load_image_folder"]
