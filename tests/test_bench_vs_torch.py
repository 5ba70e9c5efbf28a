"""bench/torch_ipt.py: the official network rebuilt in torch gives the official outputs (float64)."""
import numpy as np
import pytest

from tests.conftest import REFERENCE

torch = pytest.importorskip("torch")


def test_torch_rebuild_matches_the_official_outputs(reference_io):
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
    from bench.torch_ipt import TorchIPT
    model = TorchIPT((2,))
    assert sum(p.numel() for p in model.parameters()) == 115_460_443
    lines = (REFERENCE / "state_dict_sr2.txt").read_text().split("\n")
    expected = {line.split("\t")[0]: line.split("\t")[1] for line in lines if line.strip()}
    got = {k: str(tuple(v.shape)) for k, v in model.state_dict().items()}
    assert got == expected
