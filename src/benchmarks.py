"""Benchmark test sets as (degraded input, clean target) pairs, the way papers build them.

* SR: HR images are cropped top-left to a multiple of the scale (modcrop) and the LR is
  made with MATLAB bicubic downsampling, or read from a paired folder (EDSR-style
  ``HR/`` + ``LR_bicubic/X{s}``, ``LR/`` + ``HR/``...; see ``src.pairs``) when there is one.
* Denoise: Gaussian noise with a per-image seed derived from the base seed and the
  image name, so every run and machine sees the same noisy images in any order.
* Derain: any paired layout of ``src.pairs``: Rain100L's ``rainy/rain-NNN`` + ``norain-NNN``
  (PReNet layout), Rain12's ``rain/`` + ``norain/``, both side by side, ``input/`` + ``target/``...
  A folder of clean images gets the training's synthetic rain instead, seeded per image name like
  the noise (``synthetic_rain``: validation on held-out clean images, no paired set needed).

Grayscale files stay single channel (``is_gray``) so they are scored on their own
values; unreadable or unpaired files are logged, skipped and listed in ``Benchmark.skipped``.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from src.degradations import add_gaussian_noise, add_rain, bicubic_downsample, bicubic_upsample, modcrop
from src.image_io import ImageReadError, list_images, read_image, to_rgb3
from src.pairs import MissingScaleError, PairList, find_layout, find_pairs

LOG = logging.getLogger(__name__)

KINDS = ("sr", "denoise", "derain")


@dataclass
class BenchmarkItem:
    """One test pair. ``input`` is uint8 (SR LR, rainy) or float32 (noisy); target uint8.

    Gray images are (H, W) arrays with ``is_gray`` true; colour ones are (H, W, 3) RGB.
    """

    name: str
    input: np.ndarray
    target: np.ndarray
    is_gray: bool


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


class BenchmarkPairError(ValueError):
    """A pair that cannot be used (missing partner, sizes that do not line up)."""

    def __init__(self, path: Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"skipping {self.path}: {reason}")


def _match_channels(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Keep both gray only if both are gray; otherwise make both RGB."""
    if a.ndim == 2 and b.ndim == 2:
        return a, b, True
    return to_rgb3(a), to_rgb3(b), False


def _name_of(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


class Benchmark:
    """Sorted, lazily loaded benchmark pairs; subclasses say how pairs are found and made."""

    kind = ""

    def __init__(self, root) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"benchmark folder not found: {self.root}")
        self._unpaired: List[SkippedFile] = []  # files find_pairs could not pair, set by _find_entries
        self._entries = self._find_entries()
        self.skipped: List[SkippedFile] = list(self._unpaired)

    def _find_entries(self) -> list:
        raise NotImplementedError

    def _pair_entries(self, found: PairList) -> List[Tuple[str, Path, Path]]:
        """(name, input, target) entries of a paired folder; its unpaired files become skipped."""
        self._unpaired = [SkippedFile(str(u.path), u.reason) for u in found.skipped]
        return [(pair.name, pair.lq, pair.gt) for pair in found]

    def _load(self, entry) -> BenchmarkItem:
        raise NotImplementedError

    def __len__(self) -> int:
        """Pairs found on disk (before any unreadable ones are skipped; unpaired files excluded)."""
        return len(self._entries)

    @property
    def names(self) -> List[str]:
        """Item names in iteration order, without loading any image."""
        return [entry[0] for entry in self._entries]

    def __iter__(self) -> Iterator[BenchmarkItem]:
        """Yield items in sorted order; ``skipped`` is reset and refilled on each pass."""
        self.skipped = list(self._unpaired)
        for entry in self._entries:
            try:
                yield self._load(entry)
            except (ImageReadError, BenchmarkPairError) as exc:
                LOG.error("%s", exc)
                self.skipped.append(SkippedFile(exc.path, exc.reason))


class SRBenchmark(Benchmark):
    """HR folder (LR made by MATLAB bicubic) or a paired folder (``src.pairs``), e.g. EDSR's
    ``HR/`` + ``LR_bicubic/X{s}/`` with ``{name}x{s}`` LR files.

    With an ``HR/`` folder but no LR folder, or an ``X{s}`` split without ``X{scale}``, the LR
    is made from the HR images.
    """

    kind = "sr"

    def __init__(self, root, scale: int) -> None:
        if int(scale) < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = int(scale)
        super().__init__(root)

    def _find_entries(self) -> List[Tuple[str, Optional[Path], Path]]:
        layout = find_layout(self.root)
        if layout is None:  # a folder of HR images, or an EDSR folder with HR/ only
            hr_dir = self.root / "HR" if (self.root / "HR").is_dir() else self.root
        else:
            try:
                return self._pair_entries(find_pairs(self.root, self.scale))
            except MissingScaleError as err:
                hr_dir = layout.gt_dir
                LOG.info("%s; LR made by bicubic downsampling of %s", err, hr_dir)
        return [(_name_of(p, hr_dir), None, p) for p in list_images(hr_dir)]

    def _load(self, entry) -> BenchmarkItem:
        name, lr_path, hr_path = entry
        s = self.scale
        hr = read_image(hr_path, keep_gray=True)
        if lr_path is None:
            hr = modcrop(hr, s)
            if hr.shape[0] == 0 or hr.shape[1] == 0:
                raise BenchmarkPairError(hr_path, f"smaller than the scale {s}")
            return BenchmarkItem(name, bicubic_downsample(hr, s), hr, hr.ndim == 2)
        lr = read_image(lr_path, keep_gray=True)
        lh, lw = lr.shape[:2]
        if hr.shape[0] < lh * s or hr.shape[1] < lw * s:
            raise BenchmarkPairError(
                lr_path, f"LR {lw}x{lh} times {s} exceeds HR {hr.shape[1]}x{hr.shape[0]}")
        hr = hr[: lh * s, : lw * s]
        lr, hr, gray = _match_channels(lr, hr)
        return BenchmarkItem(name, lr, hr, gray)


def noise_seed(base_seed: int, name: str) -> List[int]:
    """Per-image seed sequence from the base seed and the image name (order independent)."""
    return [int(base_seed), zlib.crc32(name.encode("utf-8"))]


class CleanFolderBenchmark(Benchmark):
    """A folder of clean images, each degraded by ``_degrade(clean, rng)`` with a per-name seed."""

    def __init__(self, root, seed: int = 0) -> None:
        self.seed = int(seed)
        super().__init__(root)

    def _find_entries(self) -> List[Tuple[str, Path]]:
        return [(_name_of(p, self.root), p) for p in list_images(self.root)]

    def _degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _load(self, entry) -> BenchmarkItem:
        name, path = entry
        clean = read_image(path, keep_gray=True)
        degraded = self._degrade(clean, np.random.default_rng(noise_seed(self.seed, name)))
        return BenchmarkItem(name, degraded, clean, clean.ndim == 2)


class DenoiseBenchmark(CleanFolderBenchmark):
    """Clean folder + Gaussian noise of ``sigma`` seeded per image name.

    The same standard-normal draw is scaled for every sigma, as the usual test code does.
    The noisy input is float32 and unrounded unless ``round_input``.
    """

    kind = "denoise"

    def __init__(self, root, sigma: float, seed: int = 0, round_input: bool = False) -> None:
        self.sigma = float(sigma)
        self.round_input = round_input
        super().__init__(root, seed)

    def _degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return add_gaussian_noise(clean, self.sigma, rng=rng, round_output=self.round_input)


class SyntheticRainBenchmark(CleanFolderBenchmark):
    """Clean folder + the training's synthetic rain (``src.degradations.add_rain``), seeded per
    image name: a derain validation set made from held-out clean images."""

    kind = "derain"

    def _degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return add_rain(clean, rng=rng)


class DerainBenchmark(Benchmark):
    """(rainy, clean) pairs in any layout of ``src.pairs`` (Rain100L, Rain12, side by side...).

    A folder with no paired layout, or an ambiguous one, raises ``src.pairs.PairLayoutError``.
    """

    kind = "derain"

    def _find_entries(self) -> List[Tuple[str, Path, Path]]:
        return self._pair_entries(find_pairs(self.root))

    def _load(self, entry) -> BenchmarkItem:
        name, rainy_path, clean_path = entry
        rainy = read_image(rainy_path, keep_gray=True)
        clean = read_image(clean_path, keep_gray=True)
        if rainy.shape[:2] != clean.shape[:2]:
            raise BenchmarkPairError(
                rainy_path, f"size {rainy.shape[:2]} differs from {clean_path.name} {clean.shape[:2]}")
        rainy, clean, gray = _match_channels(rainy, clean)
        return BenchmarkItem(name, rainy, clean, gray)


def open_benchmark(
    root,
    kind: str,
    scale: int = 1,
    sigma: float = 0.0,
    seed: int = 0,
    round_noise: bool = False,
    synthetic_rain: bool = False,
) -> Benchmark:
    """The benchmark for a task kind ('sr' | 'denoise' | 'derain') from a folder.

    ``synthetic_rain``: derain on a folder of clean images (``SyntheticRainBenchmark``).
    """
    if kind == "sr":
        return SRBenchmark(root, scale)
    if kind == "denoise":
        return DenoiseBenchmark(root, sigma, seed=seed, round_input=round_noise)
    if kind == "derain":
        return SyntheticRainBenchmark(root, seed=seed) if synthetic_rain else DerainBenchmark(root)
    raise ValueError(f"unknown task kind {kind!r}, expected one of {KINDS}")


def baseline_output(item: BenchmarkItem, kind: str, scale: int = 1) -> np.ndarray:
    """The degraded input brought to the target's size, scored as the 'no model' baseline.

    SR: MATLAB bicubic upsampling of the LR; denoise/derain: the input itself.
    """
    if kind == "sr":
        out = bicubic_upsample(item.input, scale)
    elif kind in ("denoise", "derain"):
        out = item.input
    else:
        raise ValueError(f"unknown task kind {kind!r}, expected one of {KINDS}")
    if out.shape != item.target.shape:
        raise ValueError(f"{item.name}: baseline shape {out.shape} != target {item.target.shape}")
    return out


__all__ = [
    "BenchmarkItem", "SkippedFile", "BenchmarkPairError", "Benchmark", "SRBenchmark",
    "CleanFolderBenchmark", "DenoiseBenchmark", "DerainBenchmark", "SyntheticRainBenchmark",
    "open_benchmark", "baseline_output", "noise_seed",
]
