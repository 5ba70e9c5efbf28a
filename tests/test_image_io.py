"""Reading real benchmark files in every format and channel layout they come in."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.image_io import (
    ImageReadError, from_rgb3, is_gray, is_grayscale_file, list_images, read_image, to_rgb3,
    write_image,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def bird_bgr() -> np.ndarray:
    """A real colour image crop, in OpenCV's BGR order."""
    return cv2.imread(str(DATA / "CSet5" / "bird.png"), cv2.IMREAD_COLOR)[:96, :80]


def test_set14_grayscale_png_keeps_or_replicates_its_channel():
    path = DATA / "CSet14" / "bridge.png"
    gray = read_image(path, keep_gray=True)
    assert gray.shape == (512, 512) and gray.dtype == np.uint8
    rgb = read_image(path)
    assert rgb.shape == (512, 512, 3)
    assert all(np.array_equal(rgb[:, :, c], gray) for c in range(3))
    assert is_grayscale_file(path)
    assert not is_grayscale_file(DATA / "CSet14" / "man.png")  # RGB file with equal channels


def test_colour_png_is_rgb_order():
    path = DATA / "CSet5" / "baby.png"
    img = read_image(path, keep_gray=True)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    assert np.array_equal(img, cv2.imread(str(path))[:, :, ::-1])


def test_png_with_alpha_drops_alpha(tmp_path, bird_bgr):
    alpha = np.random.default_rng(0).integers(0, 256, bird_bgr.shape[:2], dtype=np.uint8)
    path = tmp_path / "alpha.png"
    cv2.imwrite(str(path), np.dstack([bird_bgr, alpha]))
    assert np.array_equal(read_image(path), bird_bgr[:, :, ::-1])


def test_16bit_png_rounds_to_8bit(tmp_path, bird_bgr):
    x = bird_bgr.astype(np.int64)
    x[0, 0] = 255  # full scale must stay full scale
    below = np.minimum(x * 257 + 128, 65535).astype(np.uint16)  # x + 0.498 -> x
    above = np.minimum(x * 257 + 129, 65535).astype(np.uint16)  # x + 0.502 -> x + 1
    for arr, expected in [(below, x), (above, np.minimum(x + 1, 255))]:
        path = tmp_path / "deep.png"
        cv2.imwrite(str(path), arr)
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        assert np.array_equal(read_image(path), expected[:, :, ::-1].astype(np.uint8))


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".PNG"])
def test_other_formats(tmp_path, bird_bgr, ext):
    path = tmp_path / f"img{ext}"
    assert cv2.imwrite(str(path), bird_bgr)
    img = read_image(path)
    assert img.shape == bird_bgr.shape and img.dtype == np.uint8
    assert np.array_equal(img, cv2.imread(str(path))[:, :, ::-1])
    if ext != ".jpg" and ext != ".jpeg":
        assert np.array_equal(img, bird_bgr[:, :, ::-1])


def test_corrupt_file_raises_one_line_error_naming_it(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_write_roundtrip_atomic_and_no_overwrite(tmp_path, bird_bgr):
    rgb = bird_bgr[:, :, ::-1].copy()
    path = tmp_path / "a" / "b" / "out.png"
    write_image(path, rgb)
    assert np.array_equal(read_image(path), rgb)
    with pytest.raises(FileExistsError) as info:
        write_image(path, rgb[::-1].copy())
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert np.array_equal(read_image(path), rgb)  # untouched
    write_image(path, rgb[::-1].copy(), overwrite=True)
    assert np.array_equal(read_image(path), rgb[::-1])
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]  # no temp left
    gray_path = write_image(tmp_path / "g.bmp", rgb[:, :, 1].copy())
    assert read_image(gray_path, keep_gray=True).ndim == 2
    with pytest.raises(TypeError):
        write_image(tmp_path / "f.png", rgb.astype(np.float32))


def test_list_images_filters_and_sorts(tmp_path, bird_bgr):
    for rel in ["b.png", "a.JPG", "notes.txt", "sub/c.tif", "sub/d.bmp", "x.npy"]:
        p = tmp_path / rel
        p.parent.mkdir(exist_ok=True)
        if p.suffix.lower() in (".txt", ".npy"):
            p.write_text("not an image")
        else:
            cv2.imwrite(str(p), bird_bgr)
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.JPG", "b.png", "sub/c.tif", "sub/d.bmp"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]


def test_rgb3_helpers():
    gray = read_image(DATA / "CSet14" / "bridge.png", keep_gray=True)[:32, :32]
    rgb = to_rgb3(gray)
    assert rgb.shape == (32, 32, 3) and is_gray(gray) and not is_gray(rgb)
    assert np.array_equal(from_rgb3(rgb, True), gray)
    out = rgb.astype(np.float32) + np.array([1.0, 2.0, 3.5], dtype=np.float32)
    back = from_rgb3(out, True)
    assert back.dtype == np.float32 and np.allclose(back, gray + 6.5 / 3)
    assert from_rgb3(rgb, False) is rgb
