"""Shared fixtures: paths to ../shared, a CPU MindSpore context, the converted official small model."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"
REFERENCE = SHARED / "ipt_reference"
sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    import tempfile
    # Image indexes go to a per-session cache, never the user's ~/.cache (subprocesses inherit it).
    os.environ["IPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="ipt-test-cache-")
    import mindspore as ms
    from src.config import load_config
    from src.conv import choose_formulation
    from src.flops import body_gflop
    # Decided before any kernel, for the model size the tests use (subprocess tests inherit a cap)
    choose_formulation("CPU", body_gflop(load_config("ipt_tiny", {})))
    ms.set_device("CPU")
    try:
        ms.device_context.cpu.op_tuning.threads_num(os.cpu_count() or 1)
    except RuntimeError:
        pass
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture(scope="session")
def reference_io():
    """Official inputs/outputs of the small reference checkpoint (float32 and float64)."""
    return np.load(REFERENCE / "small_io.npz"), np.load(REFERENCE / "small_io_f64.npz")


@pytest.fixture(scope="session")
def small_ref_params():
    """The official small checkpoint converted to this project's names (numpy arrays)."""
    from src.config import load_config
    from src.convert_weights import convert_state_dict
    from src.ipt import IPT
    from src.pt_reader import load_pt_state_dict
    cfg = load_config("ipt_small_ref")
    expected = {p.name: tuple(p.shape) for p in IPT(cfg).get_parameters()}
    state = load_pt_state_dict(REFERENCE / "small_pretrain6.pt")
    return cfg, convert_state_dict(state, expected, list(cfg.tasks))


@pytest.fixture(scope="session")
def small_ref_model(small_ref_params):
    """IPT with the official small checkpoint's weights; tasks in the official pre-training order."""
    import mindspore as ms
    from src.checkpoint import load_params_strict
    from src.ipt import IPT
    cfg, params = small_ref_params
    model = IPT(cfg)
    load_params_strict(model, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()}, "ref")
    model.set_train(False)
    return model


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A six-task ipt_tiny checkpoint with fixed random weights (quality is irrelevant here)."""
    import mindspore as ms
    from src.checkpoint import save_checkpoint
    from src.config import load_config
    from src.ipt import IPT
    ms.set_seed(0)
    cfg = load_config("ipt_tiny")
    path = tmp_path_factory.mktemp("tiny") / "ipt_tiny.ckpt"
    save_checkpoint(IPT(cfg), path, cfg)
    return path


def load_script(relpath: str):
    """Import a repo script that is not a package module (bench/*.py, scripts/*.py) by its path."""
    import importlib.util
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def run_cli(script: str, *args, timeout: int = 600):
    """Run one of the repo's commands as a user would; returns the CompletedProcess."""
    import subprocess
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
