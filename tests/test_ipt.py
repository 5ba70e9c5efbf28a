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


@pytest.fixture(scope="module")
def plain_tiny():
    """ipt_tiny sr_x2 with default options and fixed random weights, and a fixed input."""
    ms.set_seed(0)
    model = IPT(load_config("ipt_tiny", {"tasks": ["sr_x2"]}))
    model.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).uniform(0, 255, (1, 3, 48, 48)).astype(np.float32))
    return model, x


def _zeroed(model, names):
    """Set the named parameters to zero; returns their old values (for _restore)."""
    params = {p.name: p for p in model.get_parameters()}
    saved = {n: params[n].asnumpy().copy() for n in names}
    for n in names:
        params[n].set_data(ms.Tensor(np.zeros_like(saved[n])))
    return saved


def _restore(model, saved):
    params = {p.name: p for p in model.get_parameters()}
    for n, v in saved.items():
        params[n].set_data(ms.Tensor(v))


# What each official option removes, and the default model's parameters that, set to zero, remove
# the same thing (None: not expressible as zero weights, as LayerNorm normalises whatever it gets).
_NEUTRAL = {
    "no_pos": ["body.position_encoding.pe.weight"],
    "pos_every": ["body.position_encoding.pe.weight"],  # at every layer instead of once: equal at zero
    "no_mlp": ["body.linear_encoding.weight", "body.linear_encoding.bias", "body.mlp_head.3.weight",
               "body.mlp_head.3.bias", "body.query_embed.weight"],
    "no_norm": None,
}


@pytest.mark.parametrize("option", ["pos_every", "no_pos", "no_mlp", "no_norm"])
def test_official_options_build_and_run(option, plain_tiny):
    plain, x = plain_tiny
    cfg = load_config("ipt_tiny", {"tasks": ["sr_x2"], option: True})
    model = IPT(cfg)
    model.set_train(False)
    names = {p.name for p in model.get_parameters()}
    assert ("body.query_embed.weight" in names) == (option != "no_mlp")
    assert ("body.position_encoding.pe.weight" in names) == (option != "no_pos")
    assert any(".norm1." in n for n in names) == (option != "no_norm")
    own = {p.name: p for p in plain.get_parameters()}
    assert names <= set(own)  # an option only removes parameters
    for p in model.get_parameters():  # the same weights as the plain model
        p.set_data(ms.Tensor(own[p.name].asnumpy()))
    out = model(x).asnumpy()
    assert out.shape == (1, 3, 96, 96) and np.isfinite(out).all()
    # The option changes the network: with the same weights the output differs from the plain model's ...
    assert np.abs(out - plain(x).asnumpy()).max() > 0.1
    if _NEUTRAL[option] is None:
        return
    # ... by exactly what it removes: with those weights at zero (in both models, where the option
    # model has them too), the plain model gives the option model's output.
    zero = _NEUTRAL[option]
    saved_plain, saved_model = _zeroed(plain, zero), _zeroed(model, [n for n in zero if n in names])
    try:
        neutral, out = plain(x).asnumpy(), model(x).asnumpy()
    finally:
        _restore(plain, saved_plain)
        _restore(model, saved_model)
    np.testing.assert_allclose(out, neutral, rtol=0, atol=2e-3)


@pytest.mark.parametrize("to_batch", [True, False])
def test_head_moves_and_their_backward_are_exact(to_batch):
    """The attention's head moves (transformer._HeadMove): (B, L, heads*d) <-> (heads*B, L, d),
    head-major, and their own backward (the inverse move) is the true gradient."""
    from mindspore import nn
    from src.transformer import _HeadMove
    b, l, heads, d = 2, 5, 3, 4
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(b, l, heads * d)).astype(np.float32)
    batched = np.concatenate([tokens[:, :, h * d:(h + 1) * d] for h in range(heads)], 0)  # (heads*B, L, d)
    x, want = (tokens, batched) if to_batch else (batched, tokens)
    weights = rng.normal(size=want.shape).astype(np.float32)
    move = _HeadMove(heads, to_batch)

    class Weighted(nn.Cell):
        def __init__(self):
            super().__init__()
            self.move = move

        def construct(self, x, w):
            return (self.move(x) * w).sum()

    np.testing.assert_array_equal(move(ms.Tensor(x)).asnumpy(), want)
    grad = ms.grad(Weighted(), grad_position=0)(ms.Tensor(x), ms.Tensor(weights)).asnumpy()
    inverse = _HeadMove(heads, not to_batch)(ms.Tensor(weights)).asnumpy()  # d sum(w * move(x)) / dx
    np.testing.assert_array_equal(grad, inverse)
    assert not np.array_equal(inverse, weights.reshape(inverse.shape))  # the move is not a reshape


def test_layers_share_one_graph_only_where_measured_and_without_dropout():
    from src.transformer import _SharedGraphEncoderLayer, layers_share_one_graph
    assert layers_share_one_graph("CPU", 0.0) and layers_share_one_graph("Ascend", 0.0)
    assert not layers_share_one_graph("GPU", 0.0) and not layers_share_one_graph("CPU", 0.1)
    shared = IPT(load_config("ipt_tiny", {"tasks": ["sr_x2"]}))
    with_dropout = IPT(load_config("ipt_tiny", {"tasks": ["sr_x2"], "dropout_rate": 0.1}))
    assert isinstance(shared.body.encoder.layers[1], _SharedGraphEncoderLayer)
    assert not isinstance(with_dropout.body.encoder.layers[1], _SharedGraphEncoderLayer)


class _Weighted(ms.nn.Cell):
    """sum(body(x)[0] * w): a scalar whose gradient reaches every parameter of the body."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def construct(self, x, w):
        return (self.body(x, 1)[0] * w).sum()


@pytest.mark.parametrize("pos_every", [False, True])
def test_shared_layer_graph_gives_the_same_outputs_and_gradients(pos_every):
    """Layers compiled as one graph (lazy_inline) compute exactly what separately compiled ones do,
    forward and backward, in GRAPH_MODE."""
    from src.transformer import VisionTransformer
    rng = np.random.default_rng(1)
    x = ms.Tensor(rng.normal(size=(2, 8, 12, 12)).astype(np.float32))
    weights = ms.Tensor(rng.normal(size=(2, 8, 12, 12)).astype(np.float32))
    results = []
    for share in (False, True):
        ms.set_seed(0)
        body = VisionTransformer(img_dim=12, patch_dim=3, num_channels=8, num_heads=2, num_layers=3,
                                 num_queries=2, pos_every=pos_every, share_layer_graph=share)
        if results:  # the same weights, whatever the initialisers drew
            for p, q in zip(body.get_parameters(), results[0][2]):
                p.set_data(ms.Tensor(q))
        params = body.trainable_params()
        out = body(x, 1)[0].asnumpy()
        grads = ms.grad(_Weighted(body), None, params)(x, weights)
        results.append((out, [g.asnumpy() for g in grads], [p.asnumpy() for p in body.get_parameters()]))
    (out0, grads0, _), (out1, grads1, _) = results
    np.testing.assert_array_equal(out1, out0)
    assert len(grads1) == len(grads0) and all(np.array_equal(a, b) for a, b in zip(grads0, grads1))
    assert np.abs(grads0[-1]).max() > 0
