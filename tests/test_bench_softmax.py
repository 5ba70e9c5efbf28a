"""bench/bench_softmax.py: both softmaxes run on IPT-base's attention-map shape and agree."""
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_softmax_bench_times_both_kernels(tmp_path):
    out = tmp_path / "softmax.json"
    proc = subprocess.run([sys.executable, "bench/bench_softmax.py", "--batch", "1", "--calls", "2",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["shape"] == [12, 256, 256]
    assert result["mindspore"]["ms_per_softmax"] > 0
    assert result["mindspore"]["ms_per_tile"] == pytest.approx(result["mindspore"]["ms_per_softmax"] * 36)
    if shutil.which("g++") or shutil.which("c++"):
        assert result["c++"]["ms_per_softmax"] > 0, result["compiler"]
        assert result["max_diff"] < 1e-5  # the same softmax, to float rounding
        assert "hand-written / MindSpore" in proc.stdout
    else:
        assert "no hand-written softmax" in proc.stdout


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="needs a C++ compiler")
def test_forward_runs_with_the_hand_written_softmax(tmp_path):
    """`--forward`: the second IPT-base really runs the library's softmax (its outputs differ from
    the first's by float rounding, not by nothing and not by much)."""
    out = tmp_path / "softmax.json"
    proc = subprocess.run([sys.executable, "bench/bench_softmax.py", "--batch", "1", "--calls", "1", "--forward",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    forward = json.loads(out.read_text())["forward"]
    assert forward["mindspore_s_per_tile"] > 0 and forward["c++_s_per_tile"] > 0
    assert 0 < forward["max_output_diff"] < 0.1
    assert "IPT-base tile forward" in proc.stdout
