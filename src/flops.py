"""FLOP of one 48x48 tile through IPT, per block, from the config alone (no MindSpore).

bench/bench_model.py reports GFLOP/s with it (IPT-base: 66.65 GFLOP per sr_x2 tile, the published
66.6), and src/conv.py sizes the transformer body with it to choose how convolutions run.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

BODY_BLOCKS = ("tokens", "encoder", "decoder", "mlp_head")


def _conv(cin: int, cout: int, k: int, pixels: int) -> float:
    return 2.0 * cin * cout * k * k * pixels


def tile_flops(cfg, scale: int) -> Dict[str, float]:
    """FLOP of one 48x48 tile forward, per block (multiply-add = 2), from the config alone."""
    c, p, P = int(cfg.n_feats), int(cfg.patch_dim), int(cfg.patch_size)
    L, E = (P // p) ** 2, c * p * p
    hid, n = 4 * E, int(cfg.num_layers)
    lin = lambda fi, fo: 2.0 * L * fi * fo  # noqa: E731  (token-wise linear)
    attn = 2 * 2.0 * L * L * E               # q k^T and attn v over all heads
    mlp = not cfg.no_mlp
    enc = lin(E, 3 * E) + attn + lin(E, E) + lin(E, hid) + lin(hid, E)
    dec = (lin(E, 3 * E) + attn + lin(E, E)                      # self-attention
           + lin(E, E) + lin(E, 2 * E) + attn + lin(E, E)        # cross-attention
           + lin(E, hid) + lin(hid, E))
    tail, res = 0.0, P
    if scale & (scale - 1) == 0:
        for _ in range(int(np.log2(scale))):
            tail += _conv(c, 4 * c, 3, res * res)
            res *= 2
    elif scale == 3:
        tail += _conv(c, 9 * c, 3, res * res)
        res *= 3
    tail += _conv(c, 3, 3, res * res) + _conv(3, 3, 1, res * res)  # last conv + add_mean
    return {
        "head": _conv(3, 3, 1, P * P) + _conv(3, c, 3, P * P) + 4 * _conv(c, c, 5, P * P),
        "tokens": lin(E, E) if mlp else 0.0,
        "encoder": n * enc,
        "decoder": n * dec,
        "mlp_head": (lin(E, hid) + lin(hid, E)) if mlp else 0.0,
        "tail": tail,
    }


def body_gflop(cfg) -> float:
    """GFLOP of the transformer body per tile (the same for every task)."""
    flops = tile_flops(cfg, 1)
    return sum(flops[name] for name in BODY_BLOCKS) / 1e9
