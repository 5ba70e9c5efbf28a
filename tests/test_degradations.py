"""MATLAB bicubic resizing, Gaussian noise and synthetic rain on real images.

The published bicubic PSNR/SSIM rows are checked end to end in test_benchmarks.py.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.degradations import (
    RainParams, add_gaussian_noise, add_rain, bicubic_downsample, bicubic_upsample, imresize,
    modcrop, rain_layer, resize_matrix,
)
from src.image_io import read_image
from src.metrics import psnr

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def lenna() -> np.ndarray:
    return read_image(DATA / "CSet14" / "lenna.png")


def test_weights_sum_to_one_and_constant_is_kept():
    for n_in, n_out, scale in [(10, 20, 2.0), (30, 10, 1 / 3), (17, 5, 0.25), (7, 21, 3.0)]:
        mat = resize_matrix(n_in, n_out, scale)
        assert mat.shape == (n_out, n_in) and np.allclose(mat.sum(axis=1), 1.0)
    flat = np.full((33, 47, 3), 77, dtype=np.uint8)
    assert np.array_equal(imresize(flat, 0.25), np.full((9, 12, 3), 77, dtype=np.uint8))


def test_known_values_on_a_ramp():
    # Cubic convolution reproduces linear signals exactly away from the border:
    # output x (1-based) samples the input at u = x/scale + (1 - 1/scale)/2.
    ramp = np.tile(np.arange(40, dtype=np.float64), (3, 1))
    up = imresize(ramp, output_shape=(3, 80), scale=2.0)
    x = np.arange(1, 81)
    assert np.allclose(up[1, 4:-4], (x / 2 + 0.25 - 1)[4:-4])
    down = imresize(ramp, scale=0.5, output_shape=(3, 20))
    x = np.arange(1, 21)
    assert np.allclose(down[1, 3:-3], (2 * x - 0.5 - 1)[3:-3])


def test_integer_upscale_interpolates_input_samples(lenna):
    # For x3, u = x/3 + 1/3 is an integer at x = 3k + 2, where the kernel is interpolating.
    g = lenna[:40, :50, 1].astype(np.float64)
    up = imresize(g, 3)
    assert up.shape == (120, 150)
    assert np.allclose(up[1::3, 1::3], g)


def test_matches_pillow_bicubic_away_from_borders(lenna):
    # Pillow's float BICUBIC uses the same kernel (a=-0.5), pixel-centre mapping and
    # antialias stretch, but renormalises at the border instead of mirroring.
    Image = pytest.importorskip("PIL.Image")  # installed with scikit-image
    g = lenna[:, :, 0].astype(np.float32)
    for scale in (0.25, 0.5, 2.0, 3.0):
        shape = (int(512 * scale), int(512 * scale))
        ours = imresize(g.astype(np.float64), scale, shape)
        pil = np.asarray(Image.fromarray(g, mode="F").resize(shape[::-1], Image.BICUBIC))
        assert np.abs(ours - pil)[12:-12, 12:-12].max() < 1e-3


def test_not_opencv_cubic(lenna):
    ours = imresize(lenna, 0.25).astype(np.float64)
    cv = cv2.resize(lenna, (128, 128), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    assert np.abs(ours - cv).mean() > 1.0  # OpenCV has a=-0.75 and no antialiasing


def test_uint8_rounds_once_half_away_and_float_stays_float(lenna):
    crop = lenna[:61, :77]
    f = imresize(crop.astype(np.float64), 0.5)
    u = imresize(crop, 0.5)
    assert u.dtype == np.uint8 and f.dtype == np.float64
    assert np.array_equal(u, np.floor(np.clip(f, 0, 255) + 0.5).astype(np.uint8))
    assert imresize(crop.astype(np.float32), 2).dtype == np.float32


def test_output_sizes_odd_and_explicit(lenna):
    odd = lenna[:101, :77]
    assert imresize(odd, 1 / 3).shape == (34, 26, 3)  # ceil, as MATLAB
    assert imresize(odd, 0.5).shape == (51, 39, 3)
    assert imresize(odd, output_shape=(50, 70)).shape == (50, 70, 3)
    assert imresize(odd[:, :, 0], 2).shape == (202, 154)
    hr = modcrop(odd, 4)
    assert hr.shape == (100, 76, 3)
    lr = bicubic_downsample(hr, 4)
    assert lr.shape == (25, 19, 3) and bicubic_upsample(lr, 4).shape == hr.shape


def test_down_then_up_is_close_but_not_identity(lenna):
    back = bicubic_upsample(bicubic_downsample(lenna, 2), 2)
    assert 30 < psnr(back, lenna, crop_border=2) < 40


def _matlab_pixel(img: np.ndarray, i: int, j: int, scale: float) -> np.ndarray:
    """One output pixel of MATLAB's imresize(img, scale, 'bicubic'), summed tap by tap as MATLAB's
    `contributions` defines it (independent of resize_matrix: no matrix, no axis order)."""
    def taps(x: int, n: int):
        u = (x + 1) / scale + 0.5 * (1 - 1 / scale)
        width = 4 / scale if scale < 1 else 4
        ks = np.arange(int(np.floor(u - width / 2)), int(np.floor(u - width / 2)) + int(np.ceil(width)) + 2)
        d = u - ks
        w = scale * _cubic_ref(scale * d) if scale < 1 else _cubic_ref(d)
        q = ks - 1  # 0-based; out-of-range taps mirror symmetrically, the edge pixel repeated
        src = np.where(q < 0, -q - 1, q)
        src = np.where(src >= n, 2 * n - 1 - src, src)
        return src, w / w.sum()
    rows, wy = taps(i, img.shape[0])
    cols, wx = taps(j, img.shape[1])
    return np.einsum("k,l,klc->c", wy, wx, img[rows][:, cols].astype(np.float64))


def _cubic_ref(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return np.where(a <= 1, 1.5 * a ** 3 - 2.5 * a ** 2 + 1,
                    np.where(a <= 2, -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2, 0.0))


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 2.0])
def test_whole_image_equals_matlab_contributions(lenna, scale):
    # The whole 512x512 image (the call whose speed bench/bench_resize.py measures), checked at
    # sampled pixels, borders included, against the per-tap definition.
    out = imresize(lenna.astype(np.float64), scale)
    assert out.shape == (int(np.ceil(512 * scale - 1e-9)),) * 2 + (3,)
    h, w = out.shape[:2]
    rng = np.random.default_rng(0)
    points = [(0, 0), (h - 1, w - 1), (0, w - 1), (h - 1, 0)] + [tuple(p) for p in rng.integers(0, (h, w), (40, 2))]
    for i, j in points:
        np.testing.assert_allclose(out[i, j], _matlab_pixel(lenna, i, j, scale), rtol=0, atol=1e-9,
                                   err_msg=f"pixel {(i, j)}")


# ----------------------------------------------------------------------------- noise

def test_noise_deterministic_float_clipped_with_right_std(lenna):
    a = add_gaussian_noise(lenna, 25, seed=3)
    b = add_gaussian_noise(lenna, 25, rng=np.random.default_rng(3))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, add_gaussian_noise(lenna, 25, seed=4))
    assert a.min() >= 0 and a.max() <= 255
    assert np.any(a != np.round(a))  # left unrounded
    mid = np.full((256, 256, 3), 128, dtype=np.uint8)
    assert abs(float((add_gaussian_noise(mid, 15, seed=0) - 128).std()) - 15) < 0.2
    rounded = add_gaussian_noise(lenna, 25, seed=3, round_output=True)
    assert rounded.dtype == np.uint8 and np.abs(rounded - a).max() <= 0.5 + 1e-4


# ----------------------------------------------------------------------------- rain

def test_rain_deterministic_additive_and_plausible():
    files = sorted((DATA / "CBSD68").glob("*.png"))[:8]
    scores = []
    for i, f in enumerate(files):
        img = read_image(f)
        rainy = add_rain(img, seed=i)
        assert rainy.dtype == np.uint8 and rainy.shape == img.shape
        assert np.array_equal(rainy, add_rain(img, seed=i))
        assert not np.array_equal(rainy, add_rain(img, seed=i + 100))
        assert np.all(rainy >= img)  # white streaks are added, never subtracted
        scores.append(psnr(rainy, img))
    # Rain100L's own inputs span 20-35 dB, 26.9 dB on average.
    assert all(19 < s < 36 for s in scores)
    assert 24 < np.mean(scores) < 30


def test_rain_overrides_and_gray():
    gray = read_image(DATA / "CSet14" / "bridge.png", keep_gray=True)[:128, :128]
    heavy = add_rain(gray, seed=0, density=(0.01, 0.01), intensity=(0.8, 0.8))
    light = add_rain(gray, seed=0, params=RainParams(density=(0.001, 0.001)))
    assert heavy.shape == gray.shape
    assert psnr(heavy, gray) < psnr(light, gray)


def test_rain_streaks_enter_small_patches_from_outside():
    """Drops are seeded around the patch too, so a 48x48 training patch is rained on at its
    border as much as in its middle (seeding inside only would leave the border half dry)."""
    border, middle = [], []
    for seed in range(200):
        layer = rain_layer((48, 48), np.random.default_rng(seed))
        border.append(np.concatenate([layer[:4].ravel(), layer[-4:].ravel()]).mean())
        middle.append(layer[20:28].mean())
    assert 0.8 < np.mean(border) / np.mean(middle) < 1.25


def test_rain_layers_add_up():
    """Each layer draws its own streaks: three layers cover more of the image than one."""
    one = RainParams(layers=(1, 1), density=(0.0005, 0.0005))
    three = RainParams(layers=(3, 3), density=(0.0005, 0.0005))
    cover = lambda p: np.mean([(rain_layer((128, 128), np.random.default_rng(s), p) > 0.02).mean()
                               for s in range(20)])  # noqa: E731
    assert cover(three) > 2 * cover(one)


def test_rain_residual_statistics_are_rain100l_like():
    """bench/bench_rain_model.py's statistics of our default rain on training images fall inside
    Rain100L's per-image spread (mean +- 1.5 std) on every statistic it compares."""
    from tests.conftest import load_script
    bench = load_script("bench/bench_rain_model.py")
    bench_dir = DATA / "Rain100L"
    pairs = sorted(bench_dir.glob("norain-*.png"))[::5]
    theirs = bench.summarise([bench.residual_stats(read_image(p), read_image(bench_dir / "rainy" / p.name.replace("norain", "rain")))
                              for p in pairs])
    train = sorted((DATA / "train" / "DIV2K_crop256").glob("*.png"))[::5]
    ours = bench.summarise([bench.residual_stats(read_image(p), add_rain(read_image(p), seed=i)) for i, p in enumerate(train)])
    for key in bench.STATS:
        (mean, std), (value, _) = theirs[key], ours[key]
        assert abs(value - mean) <= 1.5 * std + 1e-3, (key, value, mean, std)


def test_rain_near_vertical_share_sets_the_direction():
    """``near_vertical`` images fall within ``vertical_angle``; the others follow ``angle``."""
    from tests.conftest import load_script
    bench = load_script("bench/bench_rain_model.py")
    clean = np.full((160, 160, 3), 60, dtype=np.uint8)
    upright = RainParams(near_vertical=1.0, angle=(25.0, 25.0), angle_jitter=0.0, layers=(1, 1))
    slanted = RainParams(near_vertical=0.0, angle=(25.0, 25.0), angle_jitter=0.0, layers=(1, 1))
    for seed in range(4):
        assert bench.residual_stats(clean, add_rain(clean, seed=seed, params=upright))["abs_angle"] <= 6
        assert abs(bench.residual_stats(clean, add_rain(clean, seed=seed, params=slanted))["abs_angle"] - 25) <= 4
