"""Benchmark test sets as (degraded input, clean target) pairs, the way papers build them.

* SR: HR images are cropped top-left to a multiple of the scale (modcrop) and the LR is
  made with MATLAB bicubic downsampling, or read from an EDSR-style ``LR_bicubic/X{s}``
  folder when one exists.
* Denoise: Gaussian noise with a per-image seed derived from the base seed and the
  image name, so every run and machine sees the same noisy images in any order.
* Derain: Rain100L pairs, ``rainy/rain-NNN`` + ``norain-NNN`` (PReNet layout) or both
  side by side.

Grayscale files stay single channel (``is_gray``) so they are scored on their own
values; unreadable files are logged, skipped and listed in ``Benchmark.skipped``.
"""
from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from src.degradations import add_gaussian_noise, bicubic_downsample, bicubic_upsample, modcrop
from src.image_io import ImageReadError, list_images, read_image, to_rgb3

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = REPO_ROOT.parent / "shared" / "datasets"  # ../shared/datasets from the repo

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
        self.skipped: List[SkippedFile] = []
        self._entries = self._find_entries()

    def _find_entries(self) -> list:
        raise NotImplementedError

    def _load(self, entry) -> BenchmarkItem:
        raise NotImplementedError

    def __len__(self) -> int:
        """Pairs found on disk (before any unreadable ones are skipped)."""
        return len(self._entries)

    @property
    def names(self) -> List[str]:
        """Item names in iteration order, without loading any image."""
        return [entry[0] for entry in self._entries]

    def __iter__(self) -> Iterator[BenchmarkItem]:
        """Yield items in sorted order; ``skipped`` is reset and refilled on each pass."""
        self.skipped = []
        for entry in self._entries:
            try:
                yield self._load(entry)
            except (ImageReadError, BenchmarkPairError) as exc:
                LOG.error("%s", exc)
                self.skipped.append(SkippedFile(exc.path, exc.reason))


class SRBenchmark(Benchmark):
    """HR folder (LR made by MATLAB bicubic) or EDSR layout ``HR/`` + ``LR_bicubic/X{s}/``.

    With an ``HR/`` folder but no ``LR_bicubic/X{s}`` the LR is made from ``HR/`` images.
    """

    kind = "sr"

    def __init__(self, root, scale: int) -> None:
        if int(scale) < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = int(scale)
        super().__init__(root)

    def _find_entries(self) -> List[Tuple[str, Path, Optional[Path]]]:
        hr_dir = self.root / "HR"
        lr_dir = self.root / "LR_bicubic" / f"X{self.scale}"
        if not hr_dir.is_dir():
            return [(_name_of(p, self.root), p, None) for p in list_images(self.root)]
        entries = []
        for hr in list_images(hr_dir):
            lr = None
            if lr_dir.is_dir():
                rel = hr.relative_to(hr_dir)
                lr = lr_dir / rel.parent / f"{hr.stem}x{self.scale}{hr.suffix}"
            entries.append((_name_of(hr, hr_dir), hr, lr))
        return entries

    def _load(self, entry) -> BenchmarkItem:
        name, hr_path, lr_path = entry
        s = self.scale
        hr = read_image(hr_path, keep_gray=True)
        if lr_path is None:
            hr = modcrop(hr, s)
            if hr.shape[0] == 0 or hr.shape[1] == 0:
                raise BenchmarkPairError(hr_path, f"smaller than the scale {s}")
            return BenchmarkItem(name, bicubic_downsample(hr, s), hr, hr.ndim == 2)
        if not lr_path.is_file():
            raise BenchmarkPairError(lr_path, f"missing LR file for {hr_path.name}")
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


class DenoiseBenchmark(Benchmark):
    """Clean folder + Gaussian noise of ``sigma`` seeded per image name.

    The same standard-normal draw is scaled for every sigma, as the usual test code does.
    The noisy input is float32 and unrounded unless ``round_input``.
    """

    kind = "denoise"

    def __init__(self, root, sigma: float, seed: int = 0, round_input: bool = False) -> None:
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.round_input = round_input
        super().__init__(root)

    def _find_entries(self) -> List[Tuple[str, Path]]:
        return [(_name_of(p, self.root), p) for p in list_images(self.root)]

    def _load(self, entry) -> BenchmarkItem:
        name, path = entry
        clean = read_image(path, keep_gray=True)
        rng = np.random.default_rng(noise_seed(self.seed, name))
        noisy = add_gaussian_noise(clean, self.sigma, rng=rng, round_output=self.round_input)
        return BenchmarkItem(name, noisy, clean, clean.ndim == 2)


_RAIN_NAME = re.compile(r"^rain-(.+)$", re.IGNORECASE)


class DerainBenchmark(Benchmark):
    """Rain100L-style pairs: ``rain-ID`` (in ``rainy/`` or the root) with root ``norain-ID``."""

    kind = "derain"

    def _find_entries(self) -> List[Tuple[str, Path, Optional[Path]]]:
        rainy_dir = self.root / "rainy"
        if not rainy_dir.is_dir():
            rainy_dir = self.root
        clean_by_id = {}
        for p in list_images(self.root, recursive=False):
            if p.stem.lower().startswith("norain-"):
                clean_by_id[p.stem[len("norain-"):]] = p
        entries = []
        for p in list_images(rainy_dir, recursive=False):
            match = _RAIN_NAME.match(p.stem)
            if match:
                entries.append((p.stem, p, clean_by_id.get(match.group(1))))
        return entries

    def _load(self, entry) -> BenchmarkItem:
        name, rainy_path, clean_path = entry
        if clean_path is None:
            raise BenchmarkPairError(rainy_path, "no matching norain file")
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
) -> Benchmark:
    """The benchmark for a task kind ('sr' | 'denoise' | 'derain') from a folder."""
    if kind == "sr":
        return SRBenchmark(root, scale)
    if kind == "denoise":
        return DenoiseBenchmark(root, sigma, seed=seed, round_input=round_noise)
    if kind == "derain":
        return DerainBenchmark(root)
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


def crop_border_for(kind: str, scale: int = 1) -> int:
    """The border excluded from scoring: ``scale`` pixels for SR, none otherwise."""
    return int(scale) if kind == "sr" else 0


__all__ = [
    "BenchmarkItem", "SkippedFile", "BenchmarkPairError", "Benchmark", "SRBenchmark",
    "DenoiseBenchmark", "DerainBenchmark", "open_benchmark", "baseline_output",
    "crop_border_for", "noise_seed", "DATASETS_DIR",
]
