"""bench/bench_cpu_forms.py: the plain side really is MindSpore's LayerNorm / all-input-views im2col,
the patch is undone, and a tiny run reports both sides with the same outputs."""
import json
import subprocess
import sys

import mindspore as ms
import numpy as np
from mindspore import ops

from tests.conftest import ROOT, load_script


def test_plain_forms_patch_and_restore():
    bench = load_script("bench/bench_cpu_forms.py")
    import src.common as common
    import src.conv as conv
    with bench.plain_forms("all"):
        norm = common._LayerNormOp(1e-5)
        assert conv.tap_layout(64, 64, 5) == "input" and conv.tap_layout(64, 3, 3) == "input"
        x = ms.Tensor(np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32) + 5)
        gamma, beta = ms.Tensor(np.ones(8, np.float32)), ms.Tensor(np.zeros(8, np.float32))
        native = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=1e-5)
        np.testing.assert_array_equal(norm(x, gamma, beta)[0].asnumpy(), native(x, gamma, beta)[0].asnumpy())
    assert conv.tap_layout(64, 64, 5) == "rows" and conv.tap_layout(64, 3, 3) == "output"
    assert not hasattr(common._LayerNormOp(1e-5), "plain")


def test_im2col_form_pairs_conv2d_with_im2col():
    """The `im2col` form builds MindSpore's Conv2D on the plain side and im2col on ours, whatever
    this process chose, and puts the process's choice back."""
    bench = load_script("bench/bench_cpu_forms.py")
    import src.conv as conv
    chosen = conv.formulation()
    with bench.plain_forms("im2col"):
        assert not conv.Conv2d(4, 4, 3).im2col
    with bench.our_forms("im2col"):
        assert conv.Conv2d(4, 4, 3).im2col
    with bench.our_forms("layer_norm"):
        assert conv.formulation() == chosen
    assert conv.formulation() == chosen


def test_plain_backwards_are_mindspore_kernels():
    """The `backwards` form's plain side is what GPU and Ascend build: MindSpore's LayerNorm and
    Softmax ops (with their own grad kernels), not the CPU-tuned cells; the patch is undone."""
    bench = load_script("bench/bench_cpu_forms.py")
    import src.common as common
    import src.transformer as transformer
    with bench.plain_forms("backwards"):
        assert isinstance(common.LayerNorm(8).norm, ops.LayerNorm)
        assert not common.cpu_backwards() and not transformer.cpu_backwards()
    assert isinstance(common.LayerNorm(8).norm, common._LayerNormOp)
    assert common.cpu_backwards() and transformer.cpu_backwards()


def test_tiny_forward_pair_runs(tmp_path):
    out = tmp_path / "forms.json"
    proc = subprocess.run([sys.executable, "bench/bench_cpu_forms.py", "--model", "tiny", "--forms", "layer_norm",
                           "--cases", "fwd:2", "--calls", "2", "--threads", "2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["case"] == "fwd:2" and row["form"] == "layer_norm"
    assert row["plain_s"] > 0 and row["ours_s"] > 0 and 0.2 < row["ratio"] < 5
    assert 0 < row["max_output_diff"] < 1e-2  # two norm forms: float rounding apart, not equal
    assert "ours/plain" in proc.stdout
