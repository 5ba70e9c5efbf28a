"""IPT's training loss: L1 on the restored image plus a patch contrastive term on the body tokens.

The contrastive term (paper sec. 3.2) asks the body's output tokens of one image to be similar to
each other and different from the tokens of the other images in the batch, so the shared body
learns task-independent image features. It is written in the supervised-contrastive (SupCon)
form: every token is an anchor, the other tokens of its image are its positives, all tokens but
itself form the denominator.
"""
from __future__ import annotations

from mindspore import nn, ops
import mindspore as ms

from src.common import expand_to


def l1_loss(out: ms.Tensor, hr: ms.Tensor) -> ms.Tensor:
    """Mean absolute error, on the 0..255 scale the network works in (as the official code)."""
    return ops.abs(out - hr).mean()


def patch_contrastive_loss(tokens: ms.Tensor, temperature: float = 0.07) -> ms.Tensor:
    """SupCon loss over the tokens (B, L, E): positives = same image, anchor excluded.

    loss_i = -mean_{p in P(i)} log(exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T)), z
    L2-normalised, averaged over all B*L anchors. Needs L >= 2, and B >= 2 to have negatives.

    Written to keep few (B*L)^2 tensors alive (about 16 MB each at batch 8 x 256 tokens, and a
    compiled graph keeps every one of them): the logits, their shifted exp and one constant mask.
    The positives' sum needs none: sum_{p in image} z_i.z_p = z_i . (sum of the image's tokens).
    """
    b, l, e = tokens.shape
    n = b * l
    z = tokens.reshape(n, e)
    # Row-wise operands are expanded explicitly (src/common.expand_to): the graph keeps nothing per element.
    z = z / expand_to(ops.sqrt(ops.maximum((z * z).sum(axis=1, keepdims=True), 1e-24)), z)  # F.normalize eps 1e-12
    zt = z / temperature
    logits = ops.matmul(zt, z.T)                                  # (n, n)
    shift = ops.stop_gradient(logits.max(axis=1, keepdims=True))  # cancels out: stability only
    others = 1.0 - ops.eye(n, n, ms.float32)                      # a != i (a constant of the graph)
    log_denom = ops.log((ops.exp(logits - expand_to(shift, logits)) * others).sum(axis=1)) + shift.reshape(n)
    self_logit = (zt * z).sum(axis=1)                             # logits[i, i]
    per_image = zt.reshape(b, l, e)
    image_sum = expand_to(z.reshape(b, l, e).sum(axis=1, keepdims=True), per_image)  # (b, 1, e) -> (b, l, e)
    pos_mean = ((per_image * image_sum).sum(axis=2).reshape(n) - self_logit) / (l - 1)
    return (log_denom - pos_mean).mean()


class IPTLoss(nn.Cell):
    """L1(out, hr) + weight * patch contrastive(tokens); returns (total, l1, contrastive).

    With weight 0 the contrastive term is not built into the graph at all (it is reported as 0).
    """

    def __init__(self, contrastive_weight: float = 0.1, temperature: float = 0.07) -> None:
        super().__init__()
        self.weight = float(contrastive_weight)
        self.temperature = float(temperature)

    def construct(self, out, hr, tokens):
        l1 = l1_loss(out, hr)
        if self.weight > 0:
            con = patch_contrastive_loss(tokens, self.temperature)
            return l1 + self.weight * con, l1, con
        return l1, l1, ops.zeros((), ms.float32)
