"""PSNR / SSIM conventions: MATLAB Y, border crop, gray images, valid-region SSIM."""
import math
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from src.degradations import add_gaussian_noise
from src.image_io import read_image
from src.metrics import MetricAverager, psnr, quantize, rgb_to_y, ssim

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def pair():
    clean = read_image(DATA / "CSet5" / "butterfly.png")
    noisy = quantize(add_gaussian_noise(clean, 15, seed=0))
    return clean, noisy


def test_rgb_to_y_matlab_values():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(px)
    assert y.dtype == np.float64
    assert np.allclose(y[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])


def test_quantize_rounds_half_to_even_and_clips():
    q = quantize(np.array([0.5, 1.5, 2.5, -3.0, 254.6, 300.0]))
    assert q.dtype == np.float32 and q.tolist() == [0, 2, 2, 0, 255, 255]


def test_psnr_known_values_and_crop():
    gray = read_image(DATA / "CSet14" / "bridge.png", keep_gray=True)[:64, :64]
    shifted = np.clip(gray.astype(np.float64) + 5, 0, 255)
    mse = np.mean((shifted - gray) ** 2)
    assert psnr(shifted, gray) == pytest.approx(10 * math.log10(255**2 / mse))
    assert psnr(gray, gray) == math.inf
    border = gray.astype(np.float64).copy()
    border[:3] += 1
    assert psnr(border, gray, crop_border=3) == math.inf
    assert psnr(border, gray, crop_border=2) < math.inf
    with pytest.raises(ValueError):
        psnr(gray, gray[:-1])


def test_gray_2d_is_scored_on_its_own_values_not_as_y():
    gray = read_image(DATA / "CSet14" / "bridge.png", keep_gray=True)[:64, :64]
    other = np.clip(gray.astype(np.float64) + 3, 0, 255)
    direct = psnr(other, gray, mode="y")
    replicated = psnr(np.dstack([other] * 3), np.dstack([gray] * 3), mode="y")
    # Y of a replicated gray image is 16 + 219/255 * g: differences shrink by 219/255.
    assert replicated - direct == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)
    assert psnr(other[:, :, None], gray[:, :, None]) == pytest.approx(direct)


def test_psnr_y_and_rgb_modes(pair):
    clean, noisy = pair
    assert psnr(noisy, clean, mode="y") == pytest.approx(psnr(rgb_to_y(noisy), rgb_to_y(clean)))
    mse = np.mean((noisy.astype(np.float64) - clean) ** 2)
    assert psnr(noisy, clean, mode="rgb") == pytest.approx(10 * math.log10(255**2 / mse))


def test_psnr_does_not_round_float_inputs(pair):
    clean, _ = pair
    assert psnr(clean + 0.4, clean, mode="rgb") == pytest.approx(10 * math.log10(255**2 / 0.16))


def test_ssim_identical_is_one(pair):
    clean, _ = pair
    assert ssim(clean, clean) == pytest.approx(1.0)
    assert ssim(clean, clean, mode="rgb") == pytest.approx(1.0)


def test_ssim_matches_skimage_gaussian_valid(pair):
    clean, noisy = pair
    kwargs = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    y_ref = structural_similarity(rgb_to_y(noisy), rgb_to_y(clean), **kwargs)
    assert ssim(noisy, clean) == pytest.approx(y_ref, abs=1e-6)
    rgb_ref = structural_similarity(
        noisy.astype(np.float64), clean.astype(np.float64), channel_axis=2, **kwargs)
    assert ssim(noisy, clean, mode="rgb") == pytest.approx(rgb_ref, abs=1e-6)
    c = 4
    cropped_ref = structural_similarity(
        rgb_to_y(noisy)[c:-c, c:-c], rgb_to_y(clean)[c:-c, c:-c], **kwargs)
    assert ssim(noisy, clean, crop_border=c) == pytest.approx(cropped_ref, abs=1e-6)
    assert 0.3 < ssim(noisy, clean) < 0.99


def test_metric_averager():
    avg = MetricAverager()
    assert avg.mean("psnr") is None
    avg.update(psnr=30.0, ssim=0.9)
    avg.update(psnr=32.0, ssim=0.8)
    assert avg.mean("psnr") == pytest.approx(31.0) and avg.count("ssim") == 2
    assert avg.means() == pytest.approx({"psnr": 31.0, "ssim": 0.85})
