"""bench/bench_results.py: the CBM3D column is read from one JSON file per sigma, merged safely."""
import json
from pathlib import Path

import pytest
from tests.conftest import load_script



def _bench_results():
    return load_script("bench/bench_results.py")


def _cbm3d_file(path: Path, *sigmas: int) -> Path:
    results = [{"task": f"denoise_{s}", "images": 3, "psnr_y": 30.0 - s / 10, "ssim_y": 0.8,
                "psnr_rgb": 28.0, "ssim_rgb": 0.7} for s in sigmas]
    path.write_text(json.dumps({"method": "CBM3D", "results": results}))
    return path


def test_cbm3d_files_of_each_sigma_are_merged(tmp_path):
    load = _bench_results().load_cbm3d
    found = load([_cbm3d_file(tmp_path / "a.json", 30), _cbm3d_file(tmp_path / "b.json", 50),
                  tmp_path / "missing.json"])
    assert sorted(found) == ["denoise_30", "denoise_50"]
    assert found["denoise_50"]["psnr_y"] == pytest.approx(25.0)


def test_cbm3d_task_in_two_files_is_an_error(tmp_path):
    load = _bench_results().load_cbm3d
    with pytest.raises(SystemExit, match="denoise_30"):
        load([_cbm3d_file(tmp_path / "a.json", 30), _cbm3d_file(tmp_path / "b.json", 30, 50)])


def test_subset_cbm3d_rows_are_marked_in_the_table():
    markdown = _bench_results().markdown
    row = {"task": "denoise_30", "set": "CBSD68", "images": 68, "weights": "pretrained/x.ckpt",
           "evals": {"baseline_y": {"psnr": 23.75, "ssim": 0.5}, "ours_y": {"psnr": 30.0, "ssim": 0.8}},
           "cbm3d": {"images": 10, "psnr_y": 31.0, "ssim_y": 0.85, "psnr_rgb": 29.0, "ssim_rgb": 0.8}}
    text = markdown([row], "header")
    assert "31.00 / 0.8500*" in text and "on 10 image(s), the other columns on 68" in text
    assert "+6.25" in text
