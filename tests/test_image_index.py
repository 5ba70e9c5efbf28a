"""The cached image index: sizes from headers, reuse, staleness, ImageNet's quirks, concurrent builders."""
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image  # scikit-image's dependency: writes the CMYK JPEG OpenCV cannot

from src.image_index import ImageIndex, build_index, default_index_path, open_index, probe_image
from src.image_io import ImageReadError, read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BABY = DATA / "CSet5" / "baby.png"


def _rgb(h=120, w=150):
    return np.ascontiguousarray(cv2.imread(str(BABY))[:h, :w, ::-1])


def _quirky_folder(root: Path) -> dict:
    """ImageNet's real oddities, each under its own name, plus what a correct reader returns."""
    rgb = _rgb()
    (root / "n01").mkdir(parents=True)
    (root / "n02").mkdir()
    Image.fromarray(rgb).save(root / "n01" / "plain.JPEG", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(root / "n01" / "cmyk.JPEG", quality=95)
    Image.fromarray(rgb).convert("L").save(root / "n01" / "gray.JPEG", quality=95)
    Image.fromarray(rgb).save(root / "n02" / "png_named.JPEG", format="PNG")
    full = (root / "n01" / "plain.JPEG").read_bytes()
    (root / "n02" / "truncated.JPEG").write_bytes(full[: len(full) // 2])
    (root / "n02" / "html.JPEG").write_bytes(b"<html><body>404 not found</body></html>")
    (root / "n02" / "empty.JPEG").write_bytes(b"")
    (root / "n02" / "notes.txt").write_text("not an image, not even by extension")
    return {"rgb": rgb, "kept": {"n01/cmyk.JPEG", "n01/gray.JPEG", "n01/plain.JPEG", "n02/png_named.JPEG"},
            "skipped": {"n02/truncated.JPEG", "n02/html.JPEG", "n02/empty.JPEG"}}


def test_imagenet_quirks_are_decoded_correctly_or_skipped_with_a_log(tmp_path, caplog):
    expect = _quirky_folder(tmp_path / "train")
    with caplog.at_level(logging.WARNING, logger="src.image_index"):
        index = build_index(tmp_path / "train")
    assert set(index.rel_paths()) == expect["kept"]
    assert {s.split(":")[0] for s in index.skipped} == expect["skipped"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3 and all("\n" not in w for w in warned)
    assert any("truncated.JPEG: truncated JPEG" in w for w in warned)
    rgb = expect["rgb"]
    for i, rel in enumerate(index.rel_paths()):
        img = read_image(index.path(i))
        assert img.shape == rgb.shape and (index.widths[i], index.heights[i]) == (150, 120), rel
        if rel.endswith("gray.JPEG"):
            assert np.array_equal(img[..., 0], img[..., 2])
            ref = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
            assert np.abs(img[..., 0] - ref).mean() < 3
        else:  # CMYK comes back as the right RGB colours, not inverted or 4-channel
            assert np.abs(img.astype(int) - rgb).mean() < 4, rel
    with pytest.raises(ImageReadError, match="truncated JPEG"):
        read_image(tmp_path / "train" / "n02" / "truncated.JPEG")  # eval/restore refuse it too


def test_probe_reads_sizes_without_decoding(tmp_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((3000, 20, 3), np.uint8))
    assert probe_image(big) == (20, 3000)
    tif = tmp_path / "x.tif"
    cv2.imwrite(str(tif), np.zeros((30, 40, 3), np.uint8))
    assert probe_image(tif) == (40, 30)  # no header reader for TIFF: decoded once


def test_index_is_cached_reused_and_rebuilt_when_the_folder_changes(tmp_path, caplog):
    root = tmp_path / "corpus"
    for d in ("a", "b/c"):
        (root / d).mkdir(parents=True)
    for i, d in enumerate(("a", "a", "b", "b/c")):
        cv2.imwrite(str(root / d / f"{i}.png"), np.full((50 + i, 60, 3), i, np.uint8))
    cache = tmp_path / "cache" / "idx.npz"
    first = open_index(root, cache)
    assert cache.is_file() and len(first) == 4
    assert list(first.rel_paths()) == ["a/0.png", "a/1.png", "b/2.png", "b/c/3.png"]
    assert list(first.heights) == [50, 51, 52, 53]
    stamp = cache.stat().st_mtime_ns
    again = open_index(root, cache)
    assert cache.stat().st_mtime_ns == stamp and again.digest == first.digest  # reused, not rebuilt
    cv2.imwrite(str(root / "b" / "c" / "4.png"), np.zeros((70, 70, 3), np.uint8))  # deep change
    grown = open_index(root, cache)
    assert len(grown) == 5 and grown.digest != first.digest
    (root / "a" / "0.png").unlink()
    assert len(open_index(root, cache)) == 4
    (root / "new").mkdir()
    cv2.imwrite(str(root / "new" / "5.png"), np.zeros((70, 70, 3), np.uint8))
    assert "new/5.png" in set(open_index(root, cache).rel_paths())
    assert not [p for p in cache.parent.iterdir() if p.name != cache.name]  # no tmp or lock left


def test_default_cache_path_is_per_folder_and_moves_with_ipt_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IPT_CACHE_DIR", str(tmp_path / "c"))
    a, b = default_index_path(tmp_path / "x"), default_index_path(tmp_path / "y")
    assert a != b and a.parent == b.parent == tmp_path / "c" / "index"


def test_relocated_index_and_non_ascii_names(tmp_path):
    root = tmp_path / "données"
    root.mkdir()
    cv2.imencode(".png", np.zeros((9, 8, 3), np.uint8))[1].tofile(str(root / "été.png"))
    index = build_index(root)
    index.save(tmp_path / "i.npz")
    moved = tmp_path / "moved"
    root.rename(moved)
    loaded = ImageIndex.load(tmp_path / "i.npz", moved)
    assert loaded.rel_path(0) == "été.png" and loaded.path(0).is_file() and loaded.digest == index.digest


def _open_in_child(args):
    root, cache = args
    return open_index(root, cache).digest


def test_concurrent_openers_build_once_and_agree(tmp_path, caplog):
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(300):
        cv2.imwrite(str(root / f"{i:03d}.png"), np.zeros((8, 8 + i % 5, 3), np.uint8))
    cache = tmp_path / "cache" / "idx.npz"
    with mp.get_context("fork").Pool(3) as pool:
        digests = pool.map(_open_in_child, [(root, cache)] * 3)
    assert len(set(digests)) == 1 and len(open_index(root, cache)) == 300
    # A lock left by a crashed builder is taken over once stale.
    lock = cache.with_name(cache.name + ".lock")
    lock.write_text("crashed 1\n")
    old = time.time() - 3600
    os.utime(lock, (old, old))
    cv2.imwrite(str(root / "new.png"), np.zeros((8, 8, 3), np.uint8))
    assert len(open_index(root, cache)) == 301 and not lock.exists()


def test_logged_paths_name_no_home_folder(monkeypatch, tmp_path):
    from src.utils import shown_path as shown
    monkeypatch.setenv("HOME", str(tmp_path))
    assert shown(tmp_path / ".cache" / "ipt" / "x.npz") == "~/.cache/ipt/x.npz"
    assert shown("/data/imagenet") == "/data/imagenet"
    assert shown(str(tmp_path) + "other/x") == str(tmp_path) + "other/x"   # a sibling, not under home
