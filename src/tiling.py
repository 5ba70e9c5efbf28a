"""Test-time tiling for IPT (the network only accepts 48x48 inputs).

Pure numpy; the network is any callable ``tile_fn`` mapping a (N,3,48,48) float32 batch
(0..255) to (N,3,48s,48s) float32.  ``tile_fn`` is *always* called with exactly
``batch_size`` tiles (the last batch is padded with zero tiles whose outputs are dropped),
so a compiled graph never sees a new shape.  Tile coordinates are generated lazily and
each batch is accumulated as soon as it returns: memory is the float32 output canvas +
O(batch_size) tiles (+ a 48s-row float64 band in fast mode, + a float64 canvas with
self-ensemble), whatever the image size.

Modes
-----
``exact``
    The official PyTorch ``forward_chop``, bit for bit, with duplicate tiles computed once
    (src/tiling_exact.py, where its region map and tile counts are described).

``fast`` (default)
    A grid of 48x48 tiles whose neighbours share at least ``overlap`` input pixels
    (stride <= 48 - overlap, positions spread evenly so the first/last tiles touch the
    borders), blended with a window across each *interior* overlap (tile sides on the
    image border keep full weight) and normalised by the summed weights (float64 band
    accumulator).  Windows: 'linear' / 'cosine' ramps over the whole overlap, 'crop' a
    hard seam in its middle, 'trim' (default) zero on the outer quarter of the overlap
    and linear over its middle half.  Any size; sides < 48 are reflect-padded.

    Measured (``python bench/bench_tiling.py --measure``): max |error| vs applying the
    dummy to the whole image, 0..255, 256x256 and 101x127, x1 and x2, noise / smooth
    images.  Nearest upsampling: 0 for every overlap and window.  Per-tile 5x5 box blur
    (zero padding, receptive radius 2): 'trim' and 'crop' exact from overlap 8, 'linear'
    still 8.4 at overlap 16 (it gives weight to tile-edge pixels).  4 x box blur (radius
    8, like IPT's conv head 3x3 + 4 x 5x5), max err noise / smooth:

        overlap (tiles 256x256)   8 (49)       12 (49)     16 (64)     20 (81)     24 (100)
        linear                    20  / 26     18 / 26     13 / 19     11 / 16     12 / 19
        cosine                    16  / 15     8.4 / 11    4.6 / 6.5   3.2 / 4.9   2.5 / 3.7
        trim                      15  / 13     4.7 / 5.7   1.2 / 1.6   0.37 / 0.55 0.15 / 0.17
        crop                      11  / 14     2.6 / 2.4   0           0           0

    Default: overlap 12 with 'trim' ('trim' is smoother than 'crop' when tiles disagree
    everywhere, as a transformer's do).  Chosen on the real network, on 2026-11-24 with
    the IPT-tiny weights shipped then (the first recipe, replaced since; not re-measured
    with the current ones) (``python bench/bench_fast_vs_exact.py --limit 10 [--overlap N]``):
    fast minus exact PSNR was -0.004 dB on Set5 x2 and -0.029 dB on CBSD68 sigma 30 (10
    images) at overlap 12, -0.003 / -0.021 dB at 16: both within 0.05 dB, and 12 needs 49
    tiles on 256x256 against 64 (397 official, 361 deduplicated exact: 7.4x fewer) and
    588 against 713 on 1000x750 (4999 / 4860).  On the radius-8 dummy above overlap 16 is
    safer; pass ``overlap=16`` (``--tile_overlap 16``) for a model whose tiles disagree
    more.  The official small checkpoint (perturbed, untrained weights) is useless for
    this: its outputs depend so much on the whole tile that fast vs exact is ~25 dB for
    every overlap and window.

Self-ensemble: the official ``forward_x8`` set of 8 transforms (flip W, flip H,
transpose, and their compositions), each tiled independently, inverted and averaged
(in float64, so agreeing passes give back their float32 value exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from src.tasks import PATCH
from src.tiling_exact import SumSink, exact_jobs, exact_tile_count, official_tile_count

__all__ = [
    "TileFn", "TileStats", "Tiler", "tiled_forward", "count_tiles", "resolve_overlap", "check_mode",
    "official_tile_count", "PATCH", "MODES", "DEFAULT_OVERLAP", "DEFAULT_BLEND",
]

TileFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]

MODES = ("fast", "exact")  # --tiling (src/config_schema.py declares its choices from here)
DEFAULT_OVERLAP = 12    # fast mode: minimum overlap between neighbouring tiles (input px)
DEFAULT_BLEND = "trim"
_BLENDS = ("linear", "cosine", "trim", "crop")


def check_mode(mode: str) -> str:
    """The tiling mode, or a ValueError naming the valid ones."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def resolve_overlap(overlap: Optional[int]) -> int:
    """The fast-mode overlap in force: `overlap`, or the measured default for None (a null
    --tile_overlap); a ValueError outside [0, 48)."""
    overlap = DEFAULT_OVERLAP if overlap is None else int(overlap)
    if not 0 <= overlap < PATCH:
        raise ValueError(f"overlap must be in [0, {PATCH}), got {overlap}")
    return overlap


@dataclass
class TileStats:
    tiles: int = 0        # distinct tiles evaluated (padding excluded, summed over x8)
    batches: int = 0      # tile_fn calls
    pad_tiles: int = 0    # dummy tiles added to fill the last batch(es)


# ----------------------------------------------------------------------------- helpers
def _pad_to_patch(img: np.ndarray) -> np.ndarray:
    """Reflect-pad (bottom/right) so both sides are >= PATCH."""
    _, h, w = img.shape
    ph, pw = max(0, PATCH - h), max(0, PATCH - w)
    if ph == 0 and pw == 0:
        return img
    if h == 1 or w == 1:  # nothing to reflect along a 1-px side
        return np.pad(img, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return np.pad(img, ((0, 0), (0, ph), (0, pw)), mode="reflect")  # numpy reflects repeatedly


def _fast_positions(length: int, overlap: int) -> List[int]:
    if length <= PATCH:
        return [0]
    stride = PATCH - overlap
    n = math.ceil((length - PATCH) / stride) + 1
    return [int(round(k * (length - PATCH) / (n - 1))) for k in range(n)]


def count_tiles(h: int, w: int, mode: str = "fast", overlap: Optional[int] = None,
                self_ensemble: bool = False) -> int:
    """Tiles that ``Tiler`` evaluates for an h x w image (padding of batches excluded)."""
    h, w = max(h, PATCH), max(w, PATCH)
    if check_mode(mode) == "exact":
        n = exact_tile_count(h, w)
    else:
        overlap = resolve_overlap(overlap)
        n = len(_fast_positions(h, overlap)) * len(_fast_positions(w, overlap))
    return n * (8 if self_ensemble else 1)


def _ramp(v: np.ndarray, blend: str, high_side: bool) -> np.ndarray:
    """Window at normalised distance v from a tile edge (0 = edge, 1 = end of overlap).
    w(v) + w(1 - v) == 1, so two neighbours sum to one across their overlap.  'crop' is
    a hard seam in the middle of the overlap; the tie at v == 0.5 goes to the lower /
    left tile (its high side), keeping the sum exactly one."""
    v = np.clip(v, 0.0, 1.0)
    if blend == "linear":
        return v
    if blend == "cosine":
        return np.sin(0.5 * np.pi * v) ** 2
    if blend == "trim":  # outer quarter of the overlap ignored, linear over the middle half
        return np.clip(2.0 * v - 0.5, 0.0, 1.0)
    return ((v >= 0.5) if high_side else (v > 0.5)).astype(np.float64)


def _axis_weight(ov_lo: int, ov_hi: int, scale: int, blend: str) -> np.ndarray:
    """1-D weight over the 48*scale output pixels of a tile whose low side overlaps the
    previous tile by ov_lo input px and whose high side overlaps the next by ov_hi
    (0 = image border / no neighbour)."""
    n = PATCH * scale
    t = (np.arange(n) + 0.5) / scale            # pixel centres, input-pixel units
    wgt = np.ones(n)
    if ov_lo > 0:
        wgt *= _ramp(t / ov_lo, blend, high_side=False)
    if ov_hi > 0:
        wgt *= _ramp((PATCH - t) / ov_hi, blend, high_side=True)
    return wgt


# ----------------------------------------------------------------------------- plans
# A job is (y0, x0, placements): the tile at input origin (y0, x0) and where its output
# goes.  A placement (ty0, ty1, tx0, tx1, oy0, oy1, ox0, ox1, wy, wx) adds
# tile_out[:, ty0:ty1, tx0:tx1] * wy[:, None] * wx[None, :] to out[:, oy0:oy1, ox0:ox1]
# (wy / wx: 1-D weights over the placement's rows / cols, None = 1).

def _fast_plan(h: int, w: int, s: int, overlap: int, blend: str):
    """Jobs (row-major) and the separable weight normaliser for fast mode."""
    ys, xs = _fast_positions(h, overlap), _fast_positions(w, overlap)
    T = PATCH * s

    def axis(pos: List[int], n_out: int):
        ws, norm = [], np.zeros(n_out)
        for k, p in enumerate(pos):
            lo = PATCH - (pos[k] - pos[k - 1]) if k > 0 else 0
            hi = PATCH - (pos[k + 1] - pos[k]) if k + 1 < len(pos) else 0
            wk = _axis_weight(lo, hi, s, blend)
            ws.append(wk)
            norm[p * s:p * s + T] += wk
        return ws, norm

    (wy, ny), (wx, nx) = axis(ys, h * s), axis(xs, w * s)

    def jobs():
        for i, y0 in enumerate(ys):
            for j, x0 in enumerate(xs):
                yield y0, x0, [(0, T, 0, T, y0 * s, y0 * s + T, x0 * s, x0 * s + T,
                                wy[i], wx[j])]

    return jobs(), ny, nx


# ----------------------------------------------------------------------------- sinks
class _BandSink:
    """Fast mode: weighted sums in a float64 band of T output rows that slides down as
    tile rows arrive (jobs come row-major); finished rows are normalised to float32 and handed
    to `emit(row, rows)`, which may keep them (the float32 canvas) or convert them on the fly
    (restore_uint8: no full-size float copy).  float64 accumulation makes agreeing tiles
    reproduce their value exactly."""

    def __init__(self, emit: Callable[[int, np.ndarray], None], height: int, width: int,
                 ny: np.ndarray, nx: np.ndarray, T: int):
        self.emit, self.height, self.ny, self.nx = emit, height, ny, nx
        self.acc = np.zeros((3, T, width), np.float64)
        self.r0 = 0

    def _advance(self, r: int) -> None:
        d = r - self.r0
        if d <= 0:
            return
        T = self.acc.shape[1]
        k = min(d, T)
        rows = self.acc[:, :k] / (self.ny[self.r0:self.r0 + k, None] * self.nx[None, :])
        self.emit(self.r0, rows.astype(np.float32))
        self.acc[:, :T - k] = self.acc[:, k:].copy()
        self.acc[:, T - k:] = 0
        self.r0 = r

    def add(self, tile: np.ndarray, places) -> None:
        for ty0, ty1, tx0, tx1, oy0, oy1, ox0, ox1, wy, wx in places:
            self._advance(oy0)
            w2 = wy[:, None] * wx[None, :]
            self.acc[:, oy0 - self.r0:oy1 - self.r0, ox0:ox1] += tile[:, ty0:ty1, tx0:tx1] * w2

    def finish(self) -> None:
        self._advance(self.height)


# ----------------------------------------------------------------------------- tiler
class Tiler:
    """Run a 48x48 network over a whole (3,H,W) image.

    >>> tiler = Tiler(runner, scale=2, mode="fast", batch_size=8)
    >>> sr = tiler(lr_chw)            # (3, 2H, 2W) float32
    >>> tiler.stats.tiles              # tiles evaluated for the last image
    """

    def __init__(self, tile_fn: TileFn, scale: int, mode: str = "fast", batch_size: int = 8,
                 overlap: Optional[int] = None, blend: str = DEFAULT_BLEND,
                 self_ensemble: bool = False, progress: Optional[ProgressFn] = None):
        check_mode(mode)
        if blend not in _BLENDS:
            raise ValueError(f"blend must be one of {_BLENDS}, got {blend!r}")
        overlap = resolve_overlap(overlap)
        if int(scale) < 1 or int(batch_size) < 1:
            raise ValueError("scale and batch_size must be >= 1")
        self.tile_fn, self.scale, self.mode = tile_fn, int(scale), mode
        self.batch_size, self.overlap, self.blend = int(batch_size), overlap, blend
        self.self_ensemble, self.progress = self_ensemble, progress
        self.stats = TileStats()

    def count(self, h: int, w: int) -> int:
        """Tiles this tiler evaluates for an h x w image."""
        return count_tiles(h, w, self.mode, self.overlap, self.self_ensemble)

    def __call__(self, img_chw: np.ndarray) -> np.ndarray:
        img = np.ascontiguousarray(img_chw, dtype=np.float32)
        if img.ndim != 3 or img.shape[0] != 3 or min(img.shape[1:]) < 1:
            raise ValueError(f"expected a (3,H,W) image, got shape {img.shape}")
        self.stats = TileStats()
        self._done, self._total = 0, self.count(*img.shape[1:])
        if not self.self_ensemble:
            return self._run(img)
        acc = None  # float64: the mean of 8 agreeing float32 outputs is that output exactly
        for k in range(8):  # bit0: flip W, bit1: flip H, bit2: transpose (forward_x8 set)
            y = _x8_inv(self._run(np.ascontiguousarray(_x8(img, k))), k)
            if acc is None:
                acc = y.astype(np.float64)
            else:
                acc += y
        acc /= 8
        return acc.astype(np.float32)

    def stream(self, img_chw: np.ndarray, emit: Callable[[int, np.ndarray], None]) -> None:
        """Fast mode without self-ensemble: hand the output to `emit(row, rows)` band by band,
        rows (3, k, W*s) float32 from output row `row` on, top to bottom, cropped to the image;
        the whole output is never held in float. Same values as `__call__`."""
        if self.mode != "fast" or self.self_ensemble:
            raise ValueError("stream needs fast tiling without self-ensemble")
        img = np.ascontiguousarray(img_chw, dtype=np.float32)
        self.stats = TileStats()
        self._done, self._total = 0, self.count(*img.shape[1:])
        h, w, s = img.shape[1], img.shape[2], self.scale

        def cropped(row: int, rows: np.ndarray) -> None:
            if row < h * s:
                emit(row, rows[:, :h * s - row, :w * s])
        self._run(img, cropped)

    def _run(self, img: np.ndarray, emit: Optional[Callable[[int, np.ndarray], None]] = None) -> np.ndarray:
        s, T = self.scale, PATCH * self.scale
        _, h, w = img.shape
        src = _pad_to_patch(img)
        hp, wp = src.shape[1:]
        out = np.zeros((3, hp * s, wp * s), np.float32) if emit is None else None
        if self.mode == "exact":
            jobs, sink = exact_jobs(hp, wp, s), SumSink(out)
        else:
            jobs, ny, nx = _fast_plan(hp, wp, s, self.overlap, self.blend)

            def keep(row: int, rows: np.ndarray) -> None:
                out[:, row:row + rows.shape[1]] = rows
            sink = _BandSink(emit or keep, hp * s, wp * s, ny, nx, T)
        batch: List[tuple] = []
        for job in jobs:
            batch.append(job)
            if len(batch) == self.batch_size:
                self._flush(src, batch, sink)
                batch = []
        if batch:
            self._flush(src, batch, sink)
        sink.finish()
        if out is None:
            return None
        return out[:, :h * s, :w * s] if (hp, wp) != (h, w) else out

    def _flush(self, src: np.ndarray, batch: List[tuple], sink) -> None:
        n, bs, T = len(batch), self.batch_size, PATCH * self.scale
        x = np.zeros((bs, 3, PATCH, PATCH), np.float32)  # padding tiles stay zero
        for k, (y0, x0, _) in enumerate(batch):
            x[k] = src[:, y0:y0 + PATCH, x0:x0 + PATCH]
        y = np.asarray(self.tile_fn(x))
        if y.shape != (bs, 3, T, T):
            raise ValueError(f"tile_fn returned {y.shape}, expected {(bs, 3, T, T)}")
        y = y.astype(np.float32, copy=False)
        for k, (_, _, places) in enumerate(batch):
            sink.add(y[k], places)
        self.stats.tiles += n
        self.stats.batches += 1
        self.stats.pad_tiles += bs - n
        self._done += n
        if self.progress is not None:
            self.progress(self._done, self._total)


def _x8(a: np.ndarray, k: int) -> np.ndarray:
    if k & 1:
        a = a[:, :, ::-1]
    if k & 2:
        a = a[:, ::-1, :]
    if k & 4:
        a = a.transpose(0, 2, 1)
    return a


def _x8_inv(a: np.ndarray, k: int) -> np.ndarray:
    if k & 4:
        a = a.transpose(0, 2, 1)
    if k & 2:
        a = a[:, ::-1, :]
    if k & 1:
        a = a[:, :, ::-1]
    return a


def tiled_forward(img_chw: np.ndarray, tile_fn: TileFn, scale: int, mode: str = "fast",
                  batch_size: int = 8, overlap: Optional[int] = None,
                  blend: str = DEFAULT_BLEND, self_ensemble: bool = False,
                  progress: Optional[ProgressFn] = None, return_stats: bool = False):
    """Functional wrapper around :class:`Tiler`; returns the (3, H*s, W*s) float32 output,
    or ``(output, TileStats)`` with ``return_stats=True``."""
    tiler = Tiler(tile_fn, scale, mode=mode, batch_size=batch_size, overlap=overlap,
                  blend=blend, self_ensemble=self_ensemble, progress=progress)
    out = tiler(img_chw)
    return (out, tiler.stats) if return_stats else out
