"""src/inference.py: streamed 8-bit restore == quantized float restore; the image-size guard."""
import numpy as np
import pytest

from src.config import load_config
from src.inference import check_image_budget, restore_array, restore_uint8
from src.metrics import quantize
from src.tasks import get_task
from src.tiling import Tiler
from tests.test_tiling import tile_local


@pytest.mark.parametrize("h, w, s", [(101, 127, 2), (30, 40, 3), (200, 50, 1), (97, 160, 4)])
@pytest.mark.parametrize("gray", [False, True])
def test_streamed_uint8_equals_quantized_float(h, w, s, gray):
    rng = np.random.default_rng(h * w + s)
    img = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
    tiler = Tiler(tile_local(s), s, mode="fast", batch_size=5)
    expected = quantize(restore_array(img, tiler)).astype(np.uint8)
    tiles = tiler.stats.tiles
    got = restore_uint8(img, tiler)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert tiler.stats.tiles == tiles


def test_exact_and_self_ensemble_fall_back_to_the_float_path():
    img = np.random.default_rng(1).integers(0, 256, (60, 70, 3), dtype=np.uint8)
    for tiler in (Tiler(tile_local(2), 2, mode="exact"), Tiler(tile_local(2), 2, self_ensemble=True)):
        np.testing.assert_array_equal(restore_uint8(img, tiler),
                                      quantize(restore_array(img, tiler)).astype(np.uint8))


def test_image_budget_names_size_memory_tiles_and_option():
    cfg = load_config("ipt_tiny")
    check_image_budget("ok.png", 8000, 8000, get_task("sr_x4"), cfg)  # 64 MP: at the limit, allowed
    with pytest.raises(ValueError) as err:
        check_image_budget("huge.png", 30000, 30000, get_task("sr_x4"), cfg)
    text = str(err.value)
    for part in ("huge.png is 30000x30000 (900 MP)", "--max_megapixels 64", "GB of memory", "tiles",
                 "raise --max_megapixels"):
        assert part in text, text
