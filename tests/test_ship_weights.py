"""scripts/ship_weights.py: a training checkpoint becomes a small float16 file that loads strictly,
keeps its task/model metadata, drops the optimizer state, and stays within the folder budget."""

import numpy as np
import pytest
import mindspore as ms

from src.checkpoint import read_checkpoint, save_checkpoint
from src.config import load_config
from src.ipt import IPT
from src.weights import load_checkpoint
from tests.conftest import load_script

TASK = "sr_x2"


def _ship_module():
    return load_script("scripts/ship_weights.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-task ipt_tiny 'training' checkpoint: random weights plus optimizer state and run metadata."""
    ms.set_seed(5)
    cfg = load_config("ipt_tiny", {"tasks": [TASK]})
    model = IPT(cfg)
    extra = {}
    for p in model.trainable_params():
        zeros = ms.Tensor(np.zeros(p.shape, np.float32))
        extra[f"optimizer.m.{p.name}"] = zeros
        extra[f"optimizer.v.{p.name}"] = zeros
    extra.update({"step": "300", "seed": "1", "lr": "0.0001", "train_mode": "finetune"})
    path = tmp_path_factory.mktemp("train") / "ipt_step00000300.ckpt"
    save_checkpoint(model, path, cfg, extra=extra)
    return cfg, model, path


def test_ship_loads_strictly_close_and_small(trained, tmp_path):
    cfg, model, src = trained
    dst = tmp_path / "pretrained" / "ipt_tiny_sr_x2.ckpt"
    summary = _ship_module().ship(src, dst)

    params, meta = read_checkpoint(dst)
    assert meta["optimizer"] == {}
    assert not {"step", "seed", "lr", "train_mode"} & set(meta)
    assert meta["ipt_tasks"] == TASK
    assert meta["ipt_model"] == read_checkpoint(src)[1]["ipt_model"]
    for name, p in params.items():
        want = ms.float32 if name.startswith(("sub_mean.", "add_mean.")) else ms.float16
        assert p.dtype == want, name

    # Weights only, in float16: about half of the weights-only float32 size.
    weights_only = tmp_path / "f32.ckpt"
    save_checkpoint(model, weights_only, cfg)
    ratio = dst.stat().st_size / weights_only.stat().st_size
    assert 0.45 < ratio < 0.56, ratio
    assert summary["dst_bytes"] == dst.stat().st_size
    assert summary["dropped_optimizer_entries"] == 2 * len(model.trainable_params())

    shipped = IPT(cfg)
    load_checkpoint(shipped, dst, cfg)  # strict: every name, every shape
    model.set_train(False)
    shipped.set_train(False)
    tile = ms.Tensor(np.random.default_rng(0).uniform(0, 255, (1, 3, 48, 48)).astype(np.float32))
    diff = np.abs(model(tile).asnumpy() - shipped(tile).asnumpy())
    # float16 rounds each weight by up to 2^-11 relative; the attention softmax amplifies it, most of
    # all in an untrained net on a noise tile (here max 0.49, mean 0.02; the lead's 750-step
    # pre-training: max 0.15-0.25 on noise tiles, 0.04-0.07 on image tiles). So: mean < 0.1, and
    # no value off by a whole 8-bit level.
    assert diff.mean() < 0.1, diff.mean()
    assert diff.max() < 1.0, diff.max()


def test_ship_refuses_overwrite_and_budget(trained, tmp_path):
    _, _, src = trained
    ship = _ship_module()
    dst = tmp_path / "ipt_tiny_sr_x2.ckpt"
    ship.ship(src, dst)
    with pytest.raises(ship.ShipError, match="exists"):
        ship.ship(src, dst)
    with pytest.raises(ship.ShipError, match="budget"):
        ship.ship(src, dst, overwrite=True, max_total_mb=1.0)
    assert dst.is_file()  # the refused copy left the old file in place
    assert [p.name for p in tmp_path.iterdir()] == [dst.name]  # and no temporary behind
