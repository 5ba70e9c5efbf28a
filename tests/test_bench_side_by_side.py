"""bench/side_by_side.py: one benchmark image through several checkpoints, as one titled figure."""
import re

import numpy as np
import pytest

from src.image_io import read_image
from tests.conftest import DATASETS, load_script, run_cli


def test_crop_and_checkpoint_arguments(tmp_path):
    side = load_script("bench/side_by_side.py")
    assert side.parse_crop("0,240,160,200") == (0, 240, 160, 200) and side.parse_crop(None) is None
    for bad in ("1,2,3", "0,0,0,5", "a,b,c,d", "-1,0,4,4"):
        with pytest.raises(ValueError, match="top,left,height,width"):
            side.parse_crop(bad)
    assert side.parse_ckpt("today=shipped") == ("today", None)
    (tmp_path / "old.ckpt").write_bytes(b"x")
    assert side.parse_ckpt(str(tmp_path / "old.ckpt")) == ("old", tmp_path / "old.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        side.parse_ckpt("old=" + str(tmp_path / "missing.ckpt"))
    img = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
    zoomed = side.crop_zoom(img, (1, 0, 2, 1), 3)
    assert zoomed.shape == (6, 3, 3) and (zoomed == img[1, 0]).all(axis=2)[:3].all()
    with pytest.raises(ValueError, match="leaves"):
        side.crop_zoom(img, (3, 0, 2, 1), 1)


def test_figure_of_two_checkpoints_on_a_benchmark_image(tmp_path, tiny_ckpt):
    """Input, the shipped weights, a random-weight model and the target, each panel the crop
    enlarged; the shipped weights must score above the random ones in the log."""
    out = tmp_path / "fig.png"
    args = ["--task", "derain", "--image", "rain-047", "--ckpt", "ours=shipped", "--ckpt", f"random={tiny_ckpt}",
            "--crop", "10,20,60,50", "--zoom", "2", "--out", out]
    proc = run_cli("bench/side_by_side.py", *args)
    assert proc.returncode == 0, proc.stderr
    fig = read_image(out)
    assert fig.shape == (60 * 2 + 22, 4 * 50 * 2, 3)
    rainy = read_image(DATASETS / "Rain100L" / "rainy" / "rain-047.png")
    assert (fig[22:, :100] == np.repeat(np.repeat(rainy[10:70, 20:70], 2, 0), 2, 1)).all()
    scores = {label: float(v) for label, v in re.findall(r"INFO (\w+): rain-047 PSNR ([\d.]+) dB", proc.stderr)}
    assert scores["ours"] > scores["random"] + 5.0
    again = run_cli("bench/side_by_side.py", *args)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


def test_unknown_image_or_a_crop_outside_it_is_one_line_before_any_model(tmp_path):
    proc = run_cli("bench/side_by_side.py", "--task", "derain", "--image", "rain-999", "--ckpt", "x=shipped",
                   "--out", tmp_path / "f.png")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no image 'rain-999' in")
    proc = run_cli("bench/side_by_side.py", "--task", "derain", "--image", "rain-047", "--ckpt", "x=shipped",
                   "--crop", "400,0,100,100", "--out", tmp_path / "f.png")
    assert proc.returncode == 2 and "leaves the 321x481 image" in proc.stderr
    assert "shipped weights" not in proc.stderr and not (tmp_path / "f.png").exists()
