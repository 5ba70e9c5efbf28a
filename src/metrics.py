"""PSNR and SSIM with the conventions behind published SR / denoise / derain tables.

Scores are computed on the MATLAB ``rgb2ycbcr`` luma (Y) by default, in float64,
with an optional border crop (``crop_border=scale`` for SR, 0 for denoise/derain).
Single-channel images are scored on their own values, as the MATLAB scripts do for
grayscale files. SSIM is Wang et al.'s Gaussian-window SSIM over the 'valid' region.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import cv2
import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def quantize(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and round half to even (like torch.round); returns float32.

    Model outputs go through this before scoring, as if saved as 8-bit images.
    """
    return np.round(np.clip(np.asarray(img, dtype=np.float64), 0.0, 255.0)).astype(np.float32)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma on the 0..255 scale: 16 + (65.481 R + 128.553 G + 24.966 B)/255.

    Returned unrounded as float64, as the EDSR/IPT evaluation code computes it. (MATLAB
    rounds Y for uint8 input; that moves bicubic PSNR by up to ~0.03 dB, see
    tests/test_benchmarks.py for the protocol behind the published bicubic rows.)
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an (H, W, 3) array, got shape {img.shape}")
    return img @ _Y_WEIGHTS + 16.0


def _prepare(img1: np.ndarray, img2: np.ndarray, crop_border: int, mode: str):
    """Shared input handling: shape check, Y conversion or channel stack, border crop."""
    if mode not in ("y", "rgb"):
        raise ValueError(f"mode must be 'y' or 'rgb', got {mode!r}")
    a = np.asarray(img1)
    b = np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a, b = a[:, :, 0], b[:, :, 0]
    if a.ndim == 3:
        if a.shape[2] != 3:
            raise ValueError(f"expected 1 or 3 channels, got shape {a.shape}")
        if mode == "y":
            a, b = rgb_to_y(a), rgb_to_y(b)
    elif a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {a.shape}")
    if crop_border:
        c = int(crop_border)
        a = a[c:-c, c:-c]
        b = b[c:-c, c:-c]
        if a.size == 0:
            raise ValueError(f"crop_border={c} leaves nothing of a {img1.shape} image")
    return a, b


def psnr(
    img1: np.ndarray,
    img2: np.ndarray,
    crop_border: int = 0,
    mode: str = "y",
    data_range: float = 255.0,
) -> float:
    """PSNR in dB between two images on the 0..255 scale (inf when identical).

    Inputs are (H, W, 3) RGB or (H, W) gray, uint8 or float; floats are not rounded here.
    """
    a, b = _prepare(img1, img2, crop_border, mode)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = cv2.getGaussianKernel(size, sigma, ktype=cv2.CV_64F)
    return g @ g.T


def _ssim_2d(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean SSIM map over the 'valid' region (no padding), as in Wang's ssim_index.m."""
    window = _gaussian_window()
    r = window.shape[0] // 2
    if a.shape[0] <= 2 * r or a.shape[1] <= 2 * r:
        raise ValueError(f"SSIM needs images larger than 11x11, got {a.shape}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def filt(x: np.ndarray) -> np.ndarray:
        # Full-size filtering then dropping the border equals a 'valid' convolution.
        return cv2.filter2D(x, -1, window, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    var1 = filt(a * a) - mu1_sq
    var2 = filt(b * b) - mu2_sq
    cov = filt(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * cov + c2)) / ((mu1_sq + mu2_sq + c1) * (var1 + var2 + c2))
    return float(ssim_map.mean())


def ssim(
    img1: np.ndarray,
    img2: np.ndarray,
    crop_border: int = 0,
    mode: str = "y",
    data_range: float = 255.0,
) -> float:
    """SSIM (11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, 'valid' region).

    'rgb' mode averages the per-channel SSIM; gray (H, W) inputs use their own values.
    """
    a, b = _prepare(img1, img2, crop_border, mode)
    if a.ndim == 2:
        return _ssim_2d(a, b, data_range)
    return float(np.mean([_ssim_2d(a[:, :, c], b[:, :, c], data_range) for c in range(a.shape[2])]))


class MetricAverager:
    """Running means of named scores over a benchmark (e.g. 'psnr', 'ssim')."""

    def __init__(self) -> None:
        self._sums: Dict[str, float] = {}
        self._counts: Dict[str, int] = {}

    def update(self, **scores: float) -> None:
        for name, value in scores.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value)
            self._counts[name] = self._counts.get(name, 0) + 1

    def mean(self, name: str) -> Optional[float]:
        """Mean of ``name`` so far, or None if never updated."""
        count = self._counts.get(name, 0)
        return self._sums[name] / count if count else None

    def means(self) -> Dict[str, float]:
        return {name: self._sums[name] / self._counts[name] for name in self._sums}

    def count(self, name: str) -> int:
        return self._counts.get(name, 0)
