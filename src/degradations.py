"""Degradation primitives: MATLAB bicubic resizing, Gaussian noise and synthetic rain.

The SR benchmarks' published bicubic numbers come from MATLAB's ``imresize``; OpenCV's
INTER_CUBIC uses a different kernel (a=-0.75) and no antialiasing, which shifts PSNR by
tenths of a dB. So resizing is reimplemented here to match MATLAB. All functions are
pure and, where random, deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

# ----------------------------------------------------------------------------- resize


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense (out_len, in_len) matrix applying MATLAB bicubic resizing along one axis.

    Follows MATLAB's ``contributions``: output pixel x (1-based) maps to input
    u = x/scale + (1 - 1/scale)/2; when downscaling the kernel is stretched by 1/scale
    (antialiasing); weights are normalised to sum 1; out-of-range taps mirror the border
    symmetrically (edge pixel repeated). Duplicated taps after mirroring are summed.
    """
    kernel_width = 4.0
    if scale < 1 and antialias:
        def kernel(x):
            return scale * _cubic(scale * x)
        kernel_width /= scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(np.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    weights = kernel(u[:, None] - idx)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], idx0.shape)
    np.add.at(mat, (rows, idx0), weights)
    return mat


@lru_cache(maxsize=512)
def _cached_resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """resize_matrix, built once per geometry (training crops repeat a few geometries)."""
    mat = resize_matrix(in_len, out_len, scale, antialias)
    mat.setflags(write=False)
    return mat


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to 0..255 and round half away from zero, like MATLAB's uint8 conversion."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def _resize_axis(img: np.ndarray, mat: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(img, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = (mat @ flat).reshape((mat.shape[0],) + moved.shape[1:])
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray,
    scale: Optional[float] = None,
    output_shape: Optional[Sequence[int]] = None,
    antialias: bool = True,
) -> np.ndarray:
    """MATLAB-compatible ``imresize(img, scale, 'bicubic')`` for (H, W) or (H, W, C) arrays.

    Give ``scale`` (output size ceil(scale * size) as MATLAB, with a 1e-9 tolerance so
    that float error such as 0.1 * 30 does not add a row) or ``output_shape``
    (H, W) (per-axis scale = out / in); with both, ``scale`` sets the kernel and
    ``output_shape`` the size. Dimensions are processed in order of increasing scale,
    rows first on ties, as MATLAB does. uint8 input is computed in float64 and rounded
    (half away from zero, clipped) once at the end; float input returns float of the
    same dtype, unclipped.
    """
    if scale is None and output_shape is None:
        raise ValueError("imresize needs scale or output_shape")
    in_shape = img.shape[:2]
    if output_shape is not None:
        out_shape = (int(output_shape[0]), int(output_shape[1]))
    else:
        out_shape = tuple(int(np.ceil(s * scale - 1e-9)) for s in in_shape)
    if min(out_shape) < 1:
        raise ValueError(f"output shape {out_shape} is empty for input {in_shape}")
    if scale is not None:
        scales = (float(scale), float(scale))
    else:
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])

    is_uint8 = img.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(img.dtype, np.floating)):
        raise TypeError(f"imresize supports uint8 or float arrays, got {img.dtype}")
    out = img.astype(np.float64)
    for axis in np.argsort(scales, kind="stable"):
        if out_shape[axis] == in_shape[axis] and scales[axis] == 1.0:
            continue
        mat = _cached_resize_matrix(in_shape[axis], out_shape[axis], scales[axis], antialias)
        out = _resize_axis(out, mat, int(axis))
    if is_uint8:
        return _round_uint8(out)
    return out.astype(img.dtype, copy=False)


def bicubic_downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR = MATLAB ``imresize(hr, 1/scale, 'bicubic')``.

    The HR image should already be cropped to a multiple of ``scale`` (modcrop, done by
    the benchmark/dataset code) so that upsampling the LR gives back the HR size; a
    non-multiple still works, with MATLAB's ceil rounding of the output size.
    """
    h, w = hr.shape[:2]
    out_shape = (int(np.ceil(h / scale)), int(np.ceil(w / scale)))
    return imresize(hr, scale=1.0 / scale, output_shape=out_shape)


def bicubic_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(lr, scale, 'bicubic')``: the classic bicubic SR baseline."""
    h, w = lr.shape[:2]
    return imresize(lr, scale=float(scale), output_shape=(h * scale, w * scale))


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so both sides are multiples of ``scale`` (top-left kept)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


# ----------------------------------------------------------------------------- noise


def _make_rng(seed: Optional[int], rng: Optional[np.random.Generator]) -> np.random.Generator:
    if rng is not None and seed is not None:
        raise ValueError("pass either seed or rng, not both")
    return rng if rng is not None else np.random.default_rng(seed)


def add_gaussian_noise(
    img: np.ndarray,
    sigma: float,
    seed: Optional[int] = None,
    rng: Optional[np.random.Generator] = None,
    round_output: bool = False,
) -> np.ndarray:
    """img + sigma * N(0, 1) on the 0..255 scale, clipped to [0, 255].

    As in the official IPT test the noisy image stays float32 (not rounded), which is
    what the published denoising numbers were measured on; ``round_output`` gives uint8.
    """
    gen = _make_rng(seed, rng)
    noise = gen.standard_normal(img.shape) * float(sigma)
    noisy = np.clip(img.astype(np.float64) + noise, 0.0, 255.0)
    if round_output:
        return np.round(noisy).astype(np.uint8)
    return noisy.astype(np.float32)


# ----------------------------------------------------------------------------- rain


@dataclass(frozen=True)
class RainParams:
    """Ranges (low, high) sampled uniformly for synthetic rain streaks.

    An image gets ``layers`` streak layers that fall in one direction (``angle``, degrees from
    vertical, or for a share ``near_vertical`` of images within ``vertical_angle``; give or take
    ``angle_jitter`` per layer); each layer draws its own density, length, width and brightness,
    so near and far rain mix: faint short streaks among bright long ones, as in the
    Photoshop-style rain of Rain100L (Yang et al. 2017). The defaults match Rain100L's rain
    residuals (rainy - clean) in coverage, brightness, streak length, width and direction (a
    third of Rain100L's images have rain within 5 degrees of vertical, the rest up to 30), with
    the same mean input PSNR(Y); ``python bench/bench_rain_model.py`` compares them.
    """

    layers: Tuple[int, int] = (1, 3)                 # streak layers per image
    density: Tuple[float, float] = (0.0004, 0.0012)  # fraction of pixels seeding a drop, per layer
    length: Tuple[int, int] = (18, 65)               # streak length in pixels
    angle: Tuple[float, float] = (-30.0, 30.0)       # degrees from vertical, per image
    angle_jitter: float = 3.0                        # per-layer deviation from the image's angle
    near_vertical: float = 0.2                       # share of images drawn within vertical_angle
    vertical_angle: Tuple[float, float] = (-5.0, 5.0)  # (uniform angles add 1/6: a third in all)
    width: Tuple[float, float] = (0.55, 1.0)         # Gaussian sigma thickening, pixels
    vertical_width: Tuple[float, float] = (0.45, 1.0)  # near-vertical: Rain100L's upright streaks are thinner
    intensity: Tuple[float, float] = (0.12, 0.45)    # peak streak brightness, 0..1 of 255
    drop_strength: Tuple[float, float] = (0.3, 1.0)  # per-drop brightness spread


def streak_kernel(length: int, angle_deg: float, width: float) -> np.ndarray:
    """Motion-blur kernel: an anti-aliased line through the centre, thickened by a
    Gaussian of sigma ``width``, normalised to peak 1 so a lone drop keeps its brightness.
    """
    pad = int(np.ceil(3 * width)) if width > 0 else 0
    size = (length if length % 2 == 1 else length + 1) + 2 * pad
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = (size - 1) / 2.0
    theta = np.deg2rad(angle_deg)
    dx, dy = np.sin(theta) * (length - 1) / 2.0, np.cos(theta) * (length - 1) / 2.0
    shift = 4  # sub-pixel precision bits for cv2.line
    p1 = (int(round((centre - dx) * 2**shift)), int(round((centre - dy) * 2**shift)))
    p2 = (int(round((centre + dx) * 2**shift)), int(round((centre + dy) * 2**shift)))
    cv2.line(kernel, p1, p2, 1.0, thickness=1, lineType=cv2.LINE_AA, shift=shift)
    if width > 0:
        kernel = cv2.GaussianBlur(kernel, (0, 0), width)
    return kernel / max(float(kernel.max()), 1e-6)


def rain_layer(
    shape: Tuple[int, int],
    rng: np.random.Generator,
    params: RainParams = RainParams(),
) -> np.ndarray:
    """A (H, W) float32 rain map in [0, 1]: layers of sparse drops motion-blurred into streaks.

    Drops are seeded on a canvas larger than the image by half a streak on every side, so
    streaks enter from outside as they would in a crop of a larger picture (no mirrored
    half-streaks at the borders of small training patches).
    """
    h, w = shape
    n_layers = int(rng.integers(params.layers[0], params.layers[1] + 1))
    vertical = rng.random() < params.near_vertical
    angle = rng.uniform(*(params.vertical_angle if vertical else params.angle))
    total = np.zeros((h, w), dtype=np.float32)
    for _ in range(n_layers):
        density = rng.uniform(*params.density)
        length = int(rng.integers(params.length[0], params.length[1] + 1))
        width = rng.uniform(*(params.vertical_width if vertical else params.width))
        intensity = rng.uniform(*params.intensity)
        tilt = angle + rng.uniform(-params.angle_jitter, params.angle_jitter)
        kernel = streak_kernel(length, tilt, width)
        pad = kernel.shape[0] // 2
        canvas = (h + 2 * pad, w + 2 * pad)
        seeds = rng.random(canvas) < density
        strength = rng.uniform(params.drop_strength[0], params.drop_strength[1], size=canvas)
        drops = (seeds * strength).astype(np.float32)
        streaks = cv2.filter2D(drops, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        total += streaks[pad:pad + h, pad:pad + w] * np.float32(intensity)
    return np.clip(total, 0.0, 1.0)


def add_rain(
    img: np.ndarray,
    seed: Optional[int] = None,
    rng: Optional[np.random.Generator] = None,
    params: Optional[RainParams] = None,
    **overrides,
) -> np.ndarray:
    """Add synthetic white rain streaks (additive, clipped) to a uint8 image; returns uint8.

    ``params`` gives all ranges, keyword ``overrides`` replace single fields of it,
    e.g. ``add_rain(img, seed=1, angle=(10, 10))``. Gray (H, W) images work too.
    """
    gen = _make_rng(seed, rng)
    base = params if params is not None else RainParams()
    if overrides:
        base = RainParams(**{**base.__dict__, **overrides})
    layer = rain_layer(img.shape[:2], gen, base) * 255.0
    if img.ndim == 3:
        layer = layer[:, :, None]
    return _round_uint8(img.astype(np.float64) + layer)
