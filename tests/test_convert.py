"""Official-weight conversion: convert.py output reproduces the official model; bad files fail clearly."""
import subprocess
import sys

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import CheckpointError, read_checkpoint
from src.config import load_config
from src.convert_weights import ConversionError, convert_state_dict
from src.ipt import IPT
from src.pt_reader import load_pt_state_dict
from src.weights import load_checkpoint
from tests.conftest import REFERENCE, ROOT

SMALL_PT = REFERENCE / "small_pretrain6.pt"


def _expected(cfg):
    return {p.name: tuple(p.shape) for p in IPT(cfg).get_parameters()}


def _run(*args):
    return subprocess.run([sys.executable, "convert.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    dst = tmp_path_factory.mktemp("conv") / "small.ckpt"
    proc = _run("--src", SMALL_PT, "--dst", dst, "--config", "ipt_small_ref")
    assert proc.returncode == 0, proc.stderr
    return dst


def test_cli_checkpoint_reproduces_official_outputs(converted, reference_io):
    io32, io64 = reference_io
    cfg = load_config("ipt_small_ref")
    model = IPT(cfg)
    meta = load_checkpoint(model, converted, cfg)
    assert meta["ipt_tasks"] == "sr_x2,sr_x3,sr_x4,derain,denoise_30,denoise_50"
    for k in (0, 3):
        out = model.task_net(model.task_names[k])(ms.Tensor(io32[f"in_t{k}"])).asnumpy()
        assert np.abs(out - io64[f"out64_t{k}"]).max() < 5e-3


def test_cli_refuses_to_overwrite(converted):
    proc = _run("--src", SMALL_PT, "--dst", converted, "--config", "ipt_small_ref")
    assert proc.returncode != 0 and "--overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_single_task_file_goes_to_its_slot(reference_io):
    """An IPT_dn30-style file (one head, one query) converts to a denoise_30 model with equal output."""
    io32, io64 = reference_io
    full = load_pt_state_dict(SMALL_PT)
    single = {}
    for key, value in full.items():
        if key.startswith(("head.", "tail.")):
            part, slot, rest = key.split(".", 2)
            if slot == "4":
                single[f"{part}.0.{rest}"] = value
        elif key == "body.query_embed.weight":
            single[key] = value[4:5]
        else:
            single[key] = value
    cfg = load_config("ipt_small_ref", {"tasks": ["denoise_30"], "num_queries": 1})
    params = convert_state_dict(single, _expected(cfg), ["denoise_30"], "denoise_30")
    model = IPT(cfg)
    ms.load_param_into_net(model, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()})
    out = model(ms.Tensor(io32["in_t4"])).asnumpy()
    assert np.abs(out - io64["out64_t4"]).max() < 5e-3
    with pytest.raises(ConversionError, match="x1, but sr_x2 needs x2|upscales x1"):
        cfg2 = load_config("ipt_small_ref", {"tasks": ["sr_x2"], "num_queries": 1})
        convert_state_dict(single, _expected(cfg2), ["sr_x2"], "sr_x2")


def test_wrong_config_names_first_difference():
    state = load_pt_state_dict(SMALL_PT)
    cfg = load_config("ipt_small_ref", {"num_layers": 4})
    with pytest.raises(ConversionError, match="lacks 'body.encoder.layers.2"):
        convert_state_dict(state, _expected(cfg), list(cfg.tasks))
    cfg = load_config("ipt_small_ref", {"n_feats": 32})
    with pytest.raises(ConversionError, match="has shape"):
        convert_state_dict(state, _expected(cfg), list(cfg.tasks))


def test_not_an_ipt_file_is_one_line_error(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "sd_zip.pt"
    proc = _run("--src", fixture, "--dst", tmp_path / "x.ckpt")
    assert proc.returncode != 0
    assert "not an IPT state dict" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = _run("--src", ROOT / "tests" / "fixtures" / "malicious_zip.pt", "--dst", tmp_path / "y.ckpt")
    assert proc.returncode != 0 and "forbidden" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _run("--src", tmp_path / "missing.pt", "--dst", tmp_path / "y.ckpt")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1


def test_loading_into_a_smaller_model_fails_loudly(converted):
    """MindSpore would skip the extra layers silently; our loader refuses, by option and by name."""
    cfg = load_config("ipt_small_ref", {"num_layers": 1})
    with pytest.raises(CheckpointError, match="num_layers=2"):
        load_checkpoint(IPT(cfg), converted, cfg)
    with pytest.raises(CheckpointError, match="parameters the model lacks, first 'body.encoder.layers.1"):
        load_checkpoint(IPT(cfg), converted)  # no config given: caught by names
    params, meta = read_checkpoint(converted)
    assert "ipt_model" in meta and all(isinstance(v, ms.Parameter) for v in params.values())
