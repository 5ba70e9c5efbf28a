"""Training loss: the patch contrastive term against a direct numpy SupCon, and where gradients go."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import ParameterTuple, Tensor

from src.config import load_config
from src.ipt import IPT
from src.losses import IPTLoss, l1_loss, patch_contrastive_loss


def supcon_numpy(tokens: np.ndarray, temperature: float) -> float:
    """The loss written out anchor by anchor, in float64."""
    b, l, e = tokens.shape
    z = tokens.reshape(b * l, e).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / temperature
    image = np.arange(b * l) // l
    total = 0.0
    for i in range(b * l):
        others = [a for a in range(b * l) if a != i]
        log_denom = np.log(np.sum(np.exp(sim[i, others])))
        positives = [p for p in others if image[p] == image[i]]
        total += -np.mean([sim[i, p] - log_denom for p in positives])
    return total / (b * l)


_contrastive = ms.jit(patch_contrastive_loss)


@pytest.mark.parametrize("shape, temperature", [((3, 6, 5), 0.07), ((2, 4, 8), 0.5), ((4, 3, 2), 0.07)])
def test_contrastive_matches_numpy(shape, temperature):
    tokens = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    got = float(_contrastive(Tensor(tokens), temperature).asnumpy())
    assert got == pytest.approx(supcon_numpy(tokens, temperature), rel=1e-5, abs=1e-5)


def test_contrastive_is_stable_and_scale_free():
    """Huge or tiny token norms give the same finite loss (normalised, row max subtracted)."""
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(3, 5, 4)).astype(np.float32)
    # Tight clusters per image: similarities near 1/T = 14.3 -> exp would be large without the shift.
    tight = (rng.normal(size=(3, 1, 4)) + 1e-3 * rng.normal(size=(3, 5, 4))).astype(np.float32)
    ref = supcon_numpy(tokens, 0.07)
    for scale in (1e-6, 1.0, 1e6):
        got = float(_contrastive(Tensor(tokens * scale), 0.07).asnumpy())
        assert got == pytest.approx(ref, rel=1e-4)
    got = float(_contrastive(Tensor(tight), 0.01).asnumpy())
    assert np.isfinite(got) and got == pytest.approx(supcon_numpy(tight, 0.01), rel=1e-4, abs=1e-4)


def test_contrastive_prefers_separated_images():
    """Tokens clustered by image score lower than the same tokens shuffled across images."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 1, 8))
    tokens = (centres + 0.1 * rng.normal(size=(3, 6, 8))).astype(np.float32)
    mixed = rng.permutation(tokens.reshape(18, 8)).reshape(3, 6, 8)
    assert float(_contrastive(Tensor(tokens), 0.07).asnumpy()) < float(_contrastive(Tensor(mixed), 0.07).asnumpy())


def test_weight_zero_skips_contrastive():
    out = np.random.default_rng(3).uniform(0, 255, (2, 3, 4, 4)).astype(np.float32)
    hr = np.random.default_rng(4).uniform(0, 255, (2, 3, 4, 4)).astype(np.float32)
    tokens = Tensor(np.zeros((2, 3, 4), np.float32))  # all-zero tokens: never normalised when off
    total, l1, con = IPTLoss(0.0)(Tensor(out), Tensor(hr), tokens)
    assert float(total.asnumpy()) == pytest.approx(np.abs(out - hr).mean(), rel=1e-6)
    assert float(l1.asnumpy()) == float(total.asnumpy()) and float(con.asnumpy()) == 0.0
    total, l1, con = IPTLoss(0.1)(Tensor(out), Tensor(hr), Tensor(np.random.default_rng(5).normal(
        size=(2, 3, 4)).astype(np.float32)))
    assert float(total.asnumpy()) == pytest.approx(float(l1.asnumpy()) + 0.1 * float(con.asnumpy()), rel=1e-6)


def test_l1_gradient_reaches_body_with_contrastive_on():
    """The tail gets body output + head features, so L1 trains the body too (the model-zoo bug
    fed the tail head features only in contrastive mode, leaving the body to the contrastive term)."""
    ms.set_seed(0)
    cfg = load_config("ipt_tiny", {"tasks": ["sr_x2"], "contrastive_weight": 0.1})
    model = IPT(cfg)
    net = model.task_net("sr_x2", with_tokens=True)
    loss = IPTLoss(cfg.contrastive_weight, cfg.contrastive_temperature)
    body = ParameterTuple([p for p in model.trainable_params()
                           if p.name in ("body.encoder.layers.0.linear1.weight", "body.linear_encoding.weight")])

    def parts(lr, hr):
        out, tokens = net(lr)
        return loss(out, hr, tokens)

    def l1_only(lr, hr):
        return parts(lr, hr)[1]

    def con_only(lr, hr):
        return parts(lr, hr)[2]

    def total(lr, hr):
        return parts(lr, hr)[0]

    @ms.jit
    def grads(lr, hr):
        return ms.grad(l1_only, None, body)(lr, hr), ms.grad(con_only, None, body)(lr, hr), \
            ms.grad(total, None, body)(lr, hr)

    rng = np.random.default_rng(0)
    lr = Tensor(rng.uniform(0, 255, (2, 3, 48, 48)).astype(np.float32))
    hr = Tensor(rng.uniform(0, 255, (2, 3, 96, 96)).astype(np.float32))
    g_l1, g_con, g_total = [[g.asnumpy() for g in gs] for gs in grads(lr, hr)]
    for a, c, t in zip(g_l1, g_con, g_total):
        assert np.abs(a).max() > 0, "L1 does not reach the body"
        assert not np.allclose(t, 0.1 * c, rtol=1e-3, atol=1e-8), "total gradient is the contrastive one"
        np.testing.assert_allclose(t, a + 0.1 * c, rtol=1e-3, atol=1e-5 * np.abs(t).max())


def test_l1_loss_is_mean_absolute_error():
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    b = np.ones_like(a)
    assert float(l1_loss(Tensor(a), Tensor(b)).asnumpy()) == pytest.approx(np.abs(a - b).mean())
