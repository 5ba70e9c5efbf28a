"""scripts/compare_checkpoints.py: bit-identical files agree, a changed weight or shape does not."""

import numpy as np

from src.checkpoint import save_checkpoint
from src.config import load_config
from tests.conftest import load_script


def _module():
    return load_script("scripts/compare_checkpoints.py")


def _save(path, params):
    return save_checkpoint(params, path, load_config("ipt_tiny", {"tasks": ["sr_x2"]}))


def test_same_files_agree_and_a_changed_weight_is_found(tmp_path, capsys):
    compare = _module()
    rng = np.random.default_rng(0)
    params = {"head.0.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
              "body.bias": rng.normal(size=(4,)).astype(np.float32)}
    a = _save(tmp_path / "a.ckpt", params)
    b = _save(tmp_path / "b.ckpt", params)
    assert compare.main([str(a), str(b)]) == 0
    assert "bit-identical" in capsys.readouterr().out

    changed = dict(params, **{"body.bias": params["body.bias"] + np.float32(1e-3)})
    c = _save(tmp_path / "c.ckpt", changed)
    assert compare.main([str(a), str(c)]) == 1
    assert compare.main([str(a), str(c), "--atol", "0.01"]) == 0


def test_names_and_shapes_must_match():
    report = _module().compare_params({"w": np.zeros((2, 2)), "x": np.zeros(1)},
                                      {"w": np.zeros((2, 3)), "y": np.zeros(1)})
    assert report["only_a"] == ["x"] and report["only_b"] == ["y"] and report["shape_mismatch"] == ["w"]
    assert report["compared"] == 0
