"""eval.py: the published baseline rows, checkpoint scoring, clear errors."""
import json
import os

import pytest

from tests.conftest import DATASETS, ROOT, run_cli

# (task, folder, published PSNR, published SSIM): the bicubic rows of every SR paper.
PUBLISHED_BICUBIC = [
    ("sr_x2", "CSet5", 33.66, 0.9299), ("sr_x3", "CSet5", 30.39, 0.8682), ("sr_x4", "CSet5", 28.42, 0.8104),
    ("sr_x2", "CSet14", 30.24, 0.8688), ("sr_x3", "CSet14", 27.55, 0.7742), ("sr_x4", "CSet14", 26.00, 0.7027),
]


@pytest.mark.parametrize("task,folder,ref_psnr,ref_ssim", PUBLISHED_BICUBIC)
def test_baseline_reproduces_published_bicubic_rows(tmp_path, task, folder, ref_psnr, ref_ssim):
    out = tmp_path / "r.json"
    proc = run_cli("eval.py", "--task", task, "--baseline", "--data_path", DATASETS / folder, "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert abs(result["psnr"] - ref_psnr) <= 0.03
    assert abs(result["ssim"] - ref_ssim) <= 0.0015


def test_baseline_rain100l_input_psnr(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("eval.py", "--task", "derain", "--baseline", "--data_path", DATASETS / "Rain100L",
                   "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 100
    assert result["data_path"] == os.path.relpath(DATASETS / "Rain100L", ROOT)  # no machine's folders
    assert abs(result["psnr"] - 26.90) < 0.01
    assert abs(result["ssim"] - 0.8384) <= 0.0005


# (task, folder, images, PSNR Y, SSIM Y, PSNR RGB): the README's denoising baseline rows, which have
# no published counterpart. The noise is seeded per image name, so they hold to the printed digits.
MEASURED_DENOISE = [
    ("denoise_30", "CBSD68", 68, 23.75, 0.4950, 19.03),
    ("denoise_50", "CBSD68", 68, 19.65, 0.3234, 15.00),
]


@pytest.mark.parametrize("task,folder,images,psnr_y,ssim_y,psnr_rgb", MEASURED_DENOISE)
def test_baseline_denoising_rows(tmp_path, task, folder, images, psnr_y, ssim_y, psnr_rgb):
    out = tmp_path / "r.json"
    proc = run_cli("eval.py", "--task", task, "--baseline", "--data_path", DATASETS / folder, "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["images"] == images
    assert abs(result["psnr"] - psnr_y) <= 0.01 and abs(result["psnr_rgb"] - psnr_rgb) <= 0.01
    assert abs(result["ssim"] - ssim_y) <= 0.0005


def test_checkpoint_eval_writes_rows_and_images(tmp_path, tiny_ckpt):
    out, saved = tmp_path / "r.json", tmp_path / "saved"
    proc = run_cli("eval.py", "--config", "ipt_tiny", "--task", "sr_x4", "--ckpt", tiny_ckpt,
                   "--data_path", DATASETS / "CSet5", "--json", out, "--save_dir", saved)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 5 and len(result["rows"]) == 5 and result["rows"][0]["tiles"] > 0
    assert sorted(p.name for p in saved.iterdir())[0] == "baby.png"
    assert "ETA" in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--task", "sr_x2", "--ckpt", "missing.ckpt"], "checkpoint not found"),
    (["--task", "sr_x5", "--baseline"], "unknown task 'sr_x5'"),
    (["--task", "sr_x2", "--num_layers", "3"], "num_layers"),
    (["--task", "sr_x2", "--bogus_option", "1"], "unknown option 'bogus_option'"),
])
def test_bad_input_is_a_one_line_error(tiny_ckpt, args, message):
    if "--ckpt" not in args and "--baseline" not in args:
        args = args + ["--ckpt", tiny_ckpt]
    proc = run_cli("eval.py", "--config", "ipt_tiny", "--data_path", DATASETS / "CSet5", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert len([l for l in proc.stderr.strip().splitlines() if l.strip()]) <= 2  # argparse adds a usage line


def test_recorded_path_is_relative_beside_the_folder_and_never_names_home(tmp_path, monkeypatch):
    from src.utils import recorded_path
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    beside = tmp_path / "shared" / "datasets" / "Set5"
    assert recorded_path(beside) == os.path.join("..", "shared", "datasets", "Set5")
    assert recorded_path("data/x") == os.path.join("data", "x")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    far = tmp_path / "home" / "deep" / "Set5"
    assert recorded_path(far) == os.path.join("..", "home", "deep", "Set5")  # still one level up
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert recorded_path(far) == "~" + os.sep + os.path.join("deep", "Set5")
