"""bench/bench_cbm3d.py: results saved after every image, and a run resumed without redoing work.

CBM3D itself (the optional bm3d package) is replaced by a blur: these tests check the bookkeeping,
not the denoiser.
"""
import json

import cv2
import numpy as np
import pytest
from tests.conftest import DATASETS, load_script

CBSD68 = DATASETS / "CBSD68"


@pytest.fixture
def bench(monkeypatch):
    """The script with a counting blur in place of CBM3D and a fixed package version."""
    module = load_script("bench/bench_cbm3d.py")
    calls = []

    def fake_cbm3d(noisy, sigma, profile="np"):
        calls.append((sigma, profile))
        return cv2.GaussianBlur(np.asarray(noisy, np.float32), (5, 5), 1.0)

    monkeypatch.setattr(module, "cbm3d", fake_cbm3d)
    monkeypatch.setattr(module, "bm3d_package", lambda: "bm3d test")
    module.calls = calls
    return module


def _run(bench, *args):
    return bench.main(["--data_path", str(CBSD68), "--log_level", "WARNING", *args])


def test_resume_keeps_scored_images_and_other_sigmas(bench, tmp_path):
    out = tmp_path / "cbm3d.json"
    _run(bench, "--sigma", "30", "50", "--limit", "2", "--json", str(out))
    first = json.loads(out.read_text())
    assert [r["images"] for r in first["results"]] == [2, 2]
    assert len(bench.calls) == 4

    _run(bench, "--sigma", "30", "--limit", "3", "--json", str(out), "--resume")
    assert len(bench.calls) == 5  # only the third sigma-30 image was denoised
    second = {r["sigma"]: r for r in json.loads(out.read_text())["results"]}
    assert second[30.0]["images"] == 3 and second[50.0]["images"] == 2
    assert second[30.0]["rows"][:2] == first["results"][0]["rows"]
    assert second[50.0] == first["results"][1]  # untouched sigma kept as it was
    mean = np.mean([r["psnr_y"] for r in second[30.0]["rows"]])
    assert second[30.0]["psnr_y"] == pytest.approx(mean)
    # a blur of sigma-30 noise beats the noisy input
    assert all(r["psnr_y"] > r["input_psnr_y"] for r in second[30.0]["rows"])


def test_partial_results_are_on_disk_after_each_image(bench, tmp_path):
    out = tmp_path / "cbm3d.json"
    seen = []
    write = bench.write_json

    def spy(path, payload):
        write(path, payload)
        seen.append([r["images"] for r in json.loads(path.read_text())["results"]])

    bench.write_json = spy
    _run(bench, "--sigma", "30", "--limit", "2", "--json", str(out))
    assert seen == [[1], [2], [2]]  # after image 1, after image 2, final write


def test_resume_refuses_a_file_made_with_other_settings(bench, tmp_path, capsys):
    out = tmp_path / "cbm3d.json"
    _run(bench, "--sigma", "30", "--limit", "1", "--json", str(out))
    with pytest.raises(SystemExit):
        _run(bench, "--sigma", "30", "--limit", "2", "--json", str(out), "--resume", "--profile", "refilter")
    assert "profile='np'" in capsys.readouterr().err


def test_existing_file_is_not_overwritten_without_being_asked(bench, tmp_path, capsys):
    out = tmp_path / "cbm3d.json"
    out.write_text("{}")
    with pytest.raises(SystemExit):
        _run(bench, "--sigma", "30", "--limit", "1", "--json", str(out))
    assert "--resume" in capsys.readouterr().err and out.read_text() == "{}"
