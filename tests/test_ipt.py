"""The network: parameter counts and names equal the official model's, outputs match the official ones."""
import numpy as np
import mindspore as ms
import pytest

from src.config import load_config
from src.ipt import IPT
from src.tasks import PRETRAIN_ORDER
from tests.conftest import REFERENCE


def _manifest(name):
    rows = [line.rstrip("\n").split("\t") for line in open(REFERENCE / name)]
    return {k: tuple(int(d) for d in s.strip("()").split(",") if d.strip()) for k, s, dt in rows
            if dt == "float32"}


@pytest.mark.parametrize("tasks,count,manifest", [
    (["sr_x2"], 115_460_443, "state_dict_sr2.txt"),
    (["sr_x4"], 115_608_155, None),
    (list(PRETRAIN_ORDER), 118_892_394, "state_dict_pretrain6.txt"),
])
def test_ipt_base_parameters_equal_official(tasks, count, manifest):
    model = IPT(load_config(None, {"tasks": tasks}))
    assert model.num_parameters() == count
    frozen = sum(int(np.prod(p.shape)) for p in model.get_parameters() if not p.requires_grad)
    assert frozen == 24  # the two mean-shift 1x1 convs
    if manifest:
        ours = {p.name: tuple(p.shape) for p in model.get_parameters()}
        assert ours == _manifest(manifest)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_official_outputs_reproduced_all_tasks(small_ref_model, reference_io, mode):
    io32, io64 = reference_io
    ms.set_context(mode=mode)
    try:
        for k, task in enumerate(PRETRAIN_ORDER):
            out = small_ref_model.task_net(task)(ms.Tensor(io32[f"in_t{k}"])).asnumpy()
            ref = io64[f"out64_t{k}"]
            assert out.shape == ref.shape
            assert np.abs(out - ref).max() < 5e-3, task
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_task_net_is_cached_and_shares_parameters(small_ref_model):
    net = small_ref_model.task_net("sr_x3")
    assert small_ref_model.task_net("sr_x3") is net
    names = {p.name for p in net.get_parameters()}
    assert "head.1.0.weight" in names and "body.query_embed.weight" in names


def test_unknown_or_absent_task_is_one_line_error():
    model = IPT(load_config("ipt_tiny", {"tasks": ["sr_x2"]}))
    with pytest.raises(ValueError, match="no 'derain' task"):
        model.task_net("derain")
    with pytest.raises(ValueError, match="unknown task 'sr_x5'"):
        model.task_net("sr_x5")


@pytest.mark.parametrize("option", ["pos_every", "no_pos", "no_mlp", "no_norm"])
def test_official_options_build_and_run(option):
    cfg = load_config("ipt_tiny", {"tasks": ["sr_x2"], option: True})
    model = IPT(cfg)
    out = model(ms.Tensor(np.random.default_rng(0).uniform(0, 255, (1, 3, 48, 48)).astype(np.float32)))
    assert out.shape == (1, 3, 96, 96) and np.isfinite(out.asnumpy()).all()
    names = {p.name for p in model.get_parameters()}
    assert ("body.query_embed.weight" in names) == (option != "no_mlp")
    assert ("body.position_encoding.pe.weight" in names) == (option != "no_pos")
