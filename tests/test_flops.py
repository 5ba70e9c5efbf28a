"""src/flops.py: the FLOP count the benches divide by, and the matmul list bench_vs_torch times."""
import pytest

from src.config import load_config
from src.flops import BODY_BLOCKS, body_gflop, body_matmuls, tile_flops


def test_ipt_base_has_the_published_flop_count():
    flops = tile_flops(load_config(None, {}), 2)
    assert sum(flops.values()) / 1e9 == pytest.approx(66.65, abs=0.005)  # the paper: 66.6 GFLOP per tile


@pytest.mark.parametrize("config", [None, "ipt_tiny"])
def test_body_matmuls_are_the_body_flop(config):
    cfg = load_config(config, {})
    matmuls = body_matmuls(cfg)
    flops = tile_flops(cfg, 2)
    for block in BODY_BLOCKS:
        assert sum(2.0 * b * m * k * n for name, _, b, m, k, n in matmuls if name == block) == flops[block]
    assert body_gflop(cfg) == pytest.approx(sum(2.0 * b * m * k * n for _, _, b, m, k, n in matmuls) / 1e9)
    layers = int(cfg.num_layers)
    # per encoder layer: q|k|v, 2 attention products, out, 2 FFN; per decoder layer 11; + 3 outside
    assert len(matmuls) == 6 * layers + 11 * layers + 3


def test_body_matmuls_shapes_follow_the_config():
    cfg = load_config("ipt_tiny", {})
    L, E, heads = (48 // 3) ** 2, 16 * 9, 4
    shapes = {(kind, b, m, k, n) for _, kind, b, m, k, n in body_matmuls(cfg)}
    lin = [("linear", 1, L, E, E), ("linear", 1, L, E, 3 * E), ("linear", 1, L, E, 2 * E),
           ("linear", 1, L, E, 4 * E), ("linear", 1, L, 4 * E, E)]
    assert shapes == {*lin, ("scores", heads, L, E // heads, L), ("mix", heads, L, L, E // heads)}
