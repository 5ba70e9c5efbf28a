"""FLOP of one 48x48 tile through IPT, per block, from the config alone (no MindSpore).

bench/bench_model.py reports GFLOP/s with it (IPT-base: 66.65 GFLOP per sr_x2 tile, the published
66.6), and src/conv.py sizes the transformer body with it to choose how convolutions run.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

BODY_BLOCKS = ("tokens", "encoder", "decoder", "mlp_head")


def _conv(cin: int, cout: int, k: int, pixels: int) -> float:
    return 2.0 * cin * cout * k * k * pixels


def body_matmuls(cfg) -> List[Tuple[str, str, int, int, int, int]]:
    """Every matmul of the transformer body for one tile, in order, as (block, kind, batch, m, k, n).

    kind 'linear': a token-wise linear, (1, L, in, out); 'scores': q k^T over all heads,
    (heads, L, d, L); 'mix': attn v over all heads, (heads, L, L, d). Their FLOP is the body's;
    bench/bench_vs_torch.py times them alone in both frameworks, the matmul-bound floor of a forward."""
    c, p, P = int(cfg.n_feats), int(cfg.patch_dim), int(cfg.patch_size)
    L, E, h = (P // p) ** 2, c * p * p, int(cfg.num_heads)
    hid, d = 4 * E, E // h

    def lin(block, fi, fo):
        return [(block, "linear", 1, L, fi, fo)]

    def attn(block):
        return [(block, "scores", h, L, d, L), (block, "mix", h, L, L, d)]

    mlp = not cfg.no_mlp
    out = lin("tokens", E, E) if mlp else []
    for _ in range(int(cfg.num_layers)):
        out += lin("encoder", E, 3 * E) + attn("encoder") + lin("encoder", E, E)
        out += lin("encoder", E, hid) + lin("encoder", hid, E)
    for _ in range(int(cfg.num_layers)):
        out += lin("decoder", E, 3 * E) + attn("decoder") + lin("decoder", E, E)   # self-attention
        out += lin("decoder", E, E) + lin("decoder", E, 2 * E) + attn("decoder")  # cross-attention
        out += lin("decoder", E, E) + lin("decoder", E, hid) + lin("decoder", hid, E)
    if mlp:
        out += lin("mlp_head", E, hid) + lin("mlp_head", hid, E)
    return out


def tile_flops(cfg, scale: int) -> Dict[str, float]:
    """FLOP of one 48x48 tile forward, per block (multiply-add = 2), from the config alone."""
    c, P = int(cfg.n_feats), int(cfg.patch_size)
    body = {name: 0.0 for name in BODY_BLOCKS}
    for block, _, b, m, k, n in body_matmuls(cfg):
        body[block] += 2.0 * b * m * k * n
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
        **body,
        "tail": tail,
    }


def body_gflop(cfg) -> float:
    """GFLOP of the transformer body per tile (the same for every task)."""
    flops = tile_flops(cfg, 1)
    return sum(flops[name] for name in BODY_BLOCKS) / 1e9
