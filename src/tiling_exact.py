"""The official test-time stitching (``--tiling exact``), as a plan of tile jobs for src/tiling.py.

The official PyTorch ``forward_chop`` (ARCHITECTURE.md 3.3): 48x48 tiles at stride
12, corner tile, bottom/right/top/left strips, strip blending means, main canvas
overwritten top -> left -> centre mean of the central 24s x 24s crops, final assembly
with the a/a' split from h_cut/w_cut.  The official result is a piecewise copy of
per-pixel means of 1, 2 or 4 tile values (region map in ``exact_jobs``); each tile's
surviving pieces are scaled by 1/count (a power of two, so exact) and added straight
into the float32 output canvas.  Grid tiles are issued in reverse row-major order, the
order in which torch's ``col2im`` (``F.fold``) adds the 4 contributions of a centre
pixel, so the result is bit-identical to the official stitching for identical tile
outputs (tests/test_tiling.py checks it against a literal re-implementation).
Official pieces that never reach the output (plain fold placement, the cut-away
halves of the strips) are not materialised.  Duplicate tiles are computed once: the
top / left strips are grid row 0 / column 0, and when h_cut == 0 (w_cut == 0) the
bottom strip (right strip; corner) are grid tiles too.  Tile evaluations: officially
nh*nw + 2(nh+nw) + 1, here nh*nw + [h_cut>0]nw + [w_cut>0]nh + [h_cut>0 and w_cut>0].
Official quirk, reproduced: because the left strip overwrites rows [0, 48s), output
rows [0, 12s) x cols [36s, 48s) come from tile (0, 0)'s right edge (no context there).
Images with a side < 48 (officially ``unfold`` raises) are reflect-padded at the
bottom/right to 48 and the output is cropped back.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np

from src.tasks import PATCH


def exact_geometry(h: int, w: int) -> Tuple[int, int, int, int]:
    """(h_cut, w_cut, grid rows, grid cols) of the official stride-12 grid (h, w >= 48)."""
    hc, wc = (h - PATCH) % 12, (w - PATCH) % 12
    nh, nw = (h - hc - PATCH) // 12 + 1, (w - wc - PATCH) // 12 + 1
    return hc, wc, nh, nw


def official_tile_count(h: int, w: int) -> int:
    """Network evaluations of the official forward_chop (h, w >= 48)."""
    _, _, nh, nw = exact_geometry(max(h, PATCH), max(w, PATCH))
    return nh * nw + 2 * (nh + nw) + 1


def exact_tile_count(h: int, w: int) -> int:
    """Distinct tiles ``exact_jobs`` evaluates for an h x w image (h, w >= 48)."""
    hc, wc, nh, nw = exact_geometry(h, w)
    return nh * nw + (nw if hc else 0) + (nh if wc else 0) + (1 if hc and wc else 0)


# Jobs and placements have the format described in src/tiling.py ("plans").
def exact_jobs(h: int, w: int, s: int) -> Iterator[tuple]:
    """Jobs of the official forward_chop, deduplicated, for an h x w image (h, w >= 48).

    Which official canvas survives where (m = 12s, T = 48s, a/a'/b/b' of ARCHITECTURE.md
    3.3, r_end = H0s - a, c_end = W0s - b; the left strip overwrites the top strip on
    cols [0, T), then the centre overwrites [m, H0s-m) x [m, W0s-m)):
      R1 centre  rows [m, r_end) x cols [m, c_end): mean of the grid tiles' central crops
      R2 top     rows [0, m)  x cols [T, c_end): top strip (mean of centre column bands)
      R3 left    rows [0, m)  x cols [0, min(T, c_end)): left strip's single-tile rows,
                 i.e. grid tile (0, 0); rows [m, r_end) x cols [0, m): left-strip means
      R4 right   rows [0, r_end) x cols [c_end, ws): right strip cols [b', T)
      R5 bottom  rows [r_end, hs) x cols [0, c_end): bottom strip rows [a', T)
      R6 corner  rows [r_end, hs) x cols [c_end, ws): corner tile [a', T) x [b', T)
    A mean of n values (n = 1, 2, 4) is produced as sum_k (v_k * 1/n): scaling by a power
    of two is exact in binary floating point, so this equals fl(sum_k v_k) / n bit for bit
    when the v_k are added in the official order (reverse row-major, see module doc).
    """
    hc, wc, nh, nw = exact_geometry(h, w)
    H0s, W0s, T, m, c1, st = (h - hc) * s, (w - wc) * s, PATCH * s, 12 * s, 36 * s, 12 * s
    xa, xb = (PATCH - hc) * s, (PATCH - wc) * s
    a, a2 = xa // 2, xa - xa // 2      # a = floor(x/2), a' = floor(x/2 + 0.5)
    b, b2 = xb // 2, xb - xb // 2
    r_end, c_end = H0s - a, W0s - b
    hs, ws = h * s, w * s

    def inverse_counts(n_out: int, n_tiles: int) -> np.ndarray:
        cnt = np.zeros(n_out, np.float32)
        for k in range(n_tiles):
            cnt[st * k + m:st * k + c1] += 1
        return np.float32(1) / np.maximum(cnt, 1)   # 1, 1/2 (1/4 via the 2-D product)

    inv_y, inv_x = inverse_counts(hs, nh), inverse_counts(ws, nw)

    def band(k: int, lo: int, hi: int, inv: np.ndarray):
        """Central band [m, 36s) of the k-th tile along an axis, clipped to [lo, hi):
        (tile_from, tile_to, out_from, out_to, weights) or None."""
        o0, o1 = max(st * k + m, lo), min(st * k + c1, hi)
        return (o0 - st * k, o1 - st * k, o0, o1, inv[o0:o1]) if o0 < o1 else None

    def single(t0: int, t1: int, o0: int, o1: int):
        return (t0, t1, o0, o1, None) if t0 < t1 else None

    def add(pl: list, r, c) -> None:
        if r is not None and c is not None:
            pl.append((r[0], r[1], c[0], c[1], r[2], r[3], c[2], c[3], r[4], c[4]))

    top_rows = single(0, m, 0, m)
    bottom_rows = single(a2, T, r_end, hs)
    right_cols = single(b2, T, c_end, ws)

    def strip_rows(i: int) -> list:  # a column-strip tile's rows in the output
        return ([top_rows] if i == 0 else []) + [band(i, m, r_end, inv_y)]

    def strip_cols(j: int) -> list:  # a row-strip (bottom) tile's cols in the output
        return ([single(0, m, 0, m)] if j == 0 else []) + [band(j, m, c_end, inv_x)]

    def bottom(j: int, pl: list) -> None:      # bottom strip tile j, origin (h-48, 12j)
        for c in strip_cols(j):
            add(pl, bottom_rows, c)

    def right(i: int, pl: list) -> None:       # right strip tile i, origin (12i, w-48)
        for r in strip_rows(i):
            add(pl, r, right_cols)

    # grid tiles in reverse row-major order == torch col2im accumulation order (R1)
    for i in range(nh - 1, -1, -1):
        for j in range(nw - 1, -1, -1):
            pl: list = []
            add(pl, band(i, m, r_end, inv_y), band(j, m, c_end, inv_x))      # R1
            if i == 0:                                                       # R2
                add(pl, top_rows, band(j, T, c_end, inv_x))
            if j == 0:                                                       # R3
                if i == 0:
                    add(pl, top_rows, single(0, min(T, c_end), 0, min(T, c_end)))
                add(pl, band(i, m, r_end, inv_y), single(0, m, 0, m))
            if hc == 0 and i == nh - 1:
                bottom(j, pl)
            if wc == 0 and j == nw - 1:
                right(i, pl)
            if hc == 0 and wc == 0 and i == nh - 1 and j == nw - 1:
                add(pl, bottom_rows, right_cols)                             # R6
            yield 12 * i, 12 * j, pl
    if hc:
        for j in range(nw - 1, -1, -1):
            pl = []
            bottom(j, pl)
            if wc == 0 and j == nw - 1:
                add(pl, bottom_rows, right_cols)
            yield h - PATCH, 12 * j, pl
    if wc:
        for i in range(nh - 1, -1, -1):
            pl = []
            right(i, pl)
            if hc == 0 and i == nh - 1:
                add(pl, bottom_rows, right_cols)
            yield 12 * i, w - PATCH, pl
    if hc and wc:
        pl = []
        add(pl, bottom_rows, right_cols)
        yield h - PATCH, w - PATCH, pl


# ----------------------------------------------------------------------------- sink
class SumSink:
    """Exact mode: float32 sums straight into the output canvas (official arithmetic)."""

    def __init__(self, out: np.ndarray):
        self.out = out

    def add(self, tile: np.ndarray, places) -> None:
        for ty0, ty1, tx0, tx1, oy0, oy1, ox0, ox1, wy, wx in places:
            piece = tile[:, ty0:ty1, tx0:tx1]
            if wy is not None:
                piece = piece * wy[:, None]
            if wx is not None:
                piece = piece * wx[None, :]
            self.out[:, oy0:oy1, ox0:ox1] += piece

    def finish(self) -> None:
        pass
