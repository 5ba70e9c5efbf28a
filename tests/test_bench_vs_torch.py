"""bench/torch_ipt.py: the official network rebuilt in torch gives the official outputs (float64);
bench/bench_vs_torch.py's matmul floor computes every matmul it claims to time."""
import numpy as np
import pytest

from tests.conftest import REFERENCE


def _torch():
    return pytest.importorskip("torch")


def test_torch_rebuild_matches_the_official_outputs(reference_io):
    torch = _torch()
    from bench.torch_ipt import TorchIPT
    io, io64 = reference_io
    model = TorchIPT((2, 3, 4, 1, 1, 1), n_feats=16, heads=4, layers=2).double().eval()
    state = torch.load(REFERENCE / "small_pretrain6.pt", weights_only=True)
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    for k in range(6):
        with torch.no_grad():
            out = model(torch.from_numpy(io[f"in_t{k}"]).double(), k).numpy()
        np.testing.assert_allclose(out, io64[f"out64_t{k}"], rtol=0, atol=1e-9)


def test_torch_rebuild_has_the_official_ipt_base_size():
    _torch()
    from bench.torch_ipt import TorchIPT
    model = TorchIPT((2,))
    assert sum(p.numel() for p in model.parameters()) == 115_460_443
    lines = (REFERENCE / "state_dict_sr2.txt").read_text().split("\n")
    expected = {line.split("\t")[0]: line.split("\t")[1] for line in lines if line.strip()}
    got = {k: str(tuple(v.shape)) for k, v in model.state_dict().items()}
    assert got == expected


def test_matmul_floor_graph_runs_every_matmul_of_the_plan():
    """The floor is only a floor if MindSpore runs all of it: no matmul merged or pruned."""
    import mindspore as ms
    from bench.bench_vs_torch import _matmul_plan, _matmuls_mindspore
    from src.config import load_config
    from src.flops import body_matmuls
    cfg = load_config("ipt_tiny", {})
    ms.set_context(mode=ms.GRAPH_MODE)
    plan = _matmul_plan(cfg, 2)
    assert len(plan) == len(body_matmuls(cfg))
    net = _matmuls_mindspore(cfg, 2)
    outs = net()
    assert len(outs) == len(plan)
    for i in (0, 2, 3, len(plan) - 1):  # a linear, both attention products, the last linear
        kind = plan[i][0]
        x, w = net.inputs[net.first[i]].asnumpy(), net.seconds[i].asnumpy()
        want = x @ w.T if kind == "linear" else x @ w.transpose(0, 2, 1) if kind == "scores" else x @ w
        np.testing.assert_allclose(outs[i].asnumpy(), want, rtol=1e-4, atol=1e-5)


def test_matmul_floor_lines_split_each_forward():
    from bench.bench_vs_torch import matmul_floor_lines
    row = lambda case, ours, theirs, fo=None, ft=None: {  # noqa: E731
        "case": case, "mindspore": {"seconds": ours, "fraction": fo}, "torch": {"seconds": theirs, "fraction": ft}}
    lines = matmul_floor_lines([row("fwd:8", 3.6, 4.0), row("mm:8", 3.0, 3.2, 0.8, 0.8), row("mm:1", 0.4, None)])
    assert lines == ["batch 8: the matmuls are 0.80 of our forward and 0.80 of torch's; ours alone take "
                     "0.375 s per tile, 0.75 of torch's whole forward"]
