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


def _saved_table(path: Path) -> Path:
    row = {"task": "denoise_30", "set": "CBSD68", "data_path": "../shared/datasets/CBSD68", "images": 3,
           "limit": 0, "weights": "pretrained/ipt_tiny_denoise_30.ckpt",
           "evals": {"baseline_y": {"psnr": 23.75, "ssim": 0.5}, "ours_y": {"psnr": 30.0, "ssim": 0.8}},
           "cbm3d": {"images": 1, "psnr_y": 1.0, "ssim_y": 0.1, "psnr_rgb": 1.0, "ssim_rgb": 0.1}}
    path.write_text(json.dumps({"ckpt_dir": "pretrained", "shipped": True, "limit": 0, "git": "abc1234",
                                "rows": [row]}))
    return path


def test_from_json_rerenders_with_new_cbm3d_and_runs_no_eval(tmp_path, monkeypatch):
    module = _bench_results()
    monkeypatch.setattr(module, "run_rows", lambda *a, **k: pytest.fail("--from_json must not run eval.py"))
    out_md, out_json = tmp_path / "table.md", tmp_path / "table.json"
    assert module.main(["--from_json", str(_saved_table(tmp_path / "old.json")),
                        "--cbm3d_json", str(_cbm3d_file(tmp_path / "c.json", 30)),
                        "--markdown", str(out_md), "--json", str(out_json)]) == 0
    text = out_md.read_text()
    assert "| 27.00 / 0.8000 |" in text and "*" not in text  # the new 3-image CBM3D result, unmarked
    assert "git abc1234" in text and "+6.25" in text
    assert json.loads(out_json.read_text())["rows"][0]["cbm3d"]["psnr_y"] == pytest.approx(27.0)


def test_from_json_refuses_another_file(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match="no limit, shipped, ckpt_dir"):
        _bench_results().main(["--from_json", str(other)])
