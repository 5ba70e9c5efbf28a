"""The compiled train step of one task: loss, gradients, (all-reduce), loss scaling, update.

Split from src/trainer.py (which builds one per task and drives them). Everything here runs
inside GRAPH_MODE graphs, so it lives in this real file.
"""
from __future__ import annotations

from typing import Optional

import mindspore as ms
from mindspore import amp, nn, ops, ParameterTuple, Tensor

from src.losses import IPTLoss
from src.optim import (AdamStep, accumulate_gradients, add_gradients, clip_global_norm, scale_gradients,
                       zero_gradients)
from src.parallel import GatherTokens
from src.precision import LossScaling


class TaskStep(nn.Cell):
    """One task's train step: loss, gradients of that task's parameters, (all-reduce), update.

    Holds the task net with auto_prefix=False so the model's parameter names stay unchanged.
    construct(lr, hr, lr_value) -> (loss, l1, contrastive, finite), global over the ranks.

    Static loss scale (`scaling.dynamic` False): today's graph, unchanged (a scale of 1 adds no op).
    Dynamic (amp.DynamicLossScaler): the loss is multiplied by the current scale, the gradients are
    checked with amp.all_finite (the flag all-reduced, so every rank skips together), unscaled,
    and the update runs only when all are finite: an overflowing step leaves weights, Adam moments
    and step counts untouched; the scaler then halves the scale (or doubles it after `window`
    clean steps).
    Gradient accumulation (`accum`, K > 1): `MicroStep` adds the gradients of micro-batches 1..K-1
    (scaled domain) into `accum`; this step adds its own, checks and applies the sum / K (the mean:
    one batch of K x B for the L1 term), then zeroes `accum`.
    """

    def __init__(self, net: nn.Cell, loss_fn: IPTLoss, weights: ParameterTuple, update: AdamStep,
                 scaling: LossScaling, grad_clip: float, rank: int, world_size: int,
                 accum: Optional[ParameterTuple] = None, micro_batches: int = 1) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss_fn = loss_fn
        self.weights = weights
        self.update = update
        self.contrastive_weight = loss_fn.weight
        self.dynamic = scaling.dynamic
        self.scaler = scaling.scaler
        self.scale = float(scaling.static_value)
        self.inv_scale = Tensor(1.0 / self.scale, ms.float32)
        self.accum = accum
        self.inv_k = Tensor(1.0 / max(int(micro_batches), 1), ms.float32)
        self.clip = float(grad_clip)
        self.world = world_size
        distributed = world_size > 1
        self.gather = GatherTokens(rank, world_size) if distributed and loss_fn.weight > 0 else None
        self.reducer = nn.DistributedGradReducer(weights, mean=True, degree=world_size) if distributed else None
        self.all_reduce = ops.AllReduce() if distributed else None
        self.grad_fn = ms.value_and_grad(self.forward, None, weights, has_aux=True)

    def forward(self, lr, hr):
        out, tokens = self.net(lr)
        if self.gather is not None:
            tokens = self.gather(tokens)
        loss, l1, con = self.loss_fn(out, hr, tokens)
        if self.dynamic:
            return self.scaler.scale(loss), l1, con
        return loss * self.scale, l1, con

    def construct(self, lr, hr, lr_value):
        (_, l1, con), grads = self.grad_fn(lr, hr)
        if self.accum is not None:
            grads = add_gradients(grads, self.accum)
        if self.dynamic:
            return self._dynamic_update(grads, l1, con, lr_value)
        if self.reducer is not None:
            grads = self.reducer(grads)
            l1 = self.all_reduce(l1) / self.world  # for logging: the global batch's L1
        if self.scale != 1.0:
            grads = scale_gradients(grads, self.inv_scale)
        if self.accum is not None:
            grads = scale_gradients(grads, self.inv_k)
        if self.clip > 0:
            grads = clip_global_norm(grads, self.clip)
        done = self.update(grads, lr_value)
        if self.accum is not None:
            done = ops.depend(done, zero_gradients(self.accum))
        return ops.depend(l1 + self.contrastive_weight * con, done), l1, con, ops.ones((), ms.bool_)

    def _dynamic_update(self, grads, l1, con, lr_value):
        finite = amp.all_finite(grads)
        if self.reducer is not None:
            overflow = self.all_reduce(1.0 - finite.astype(ms.float32))  # ranks agree: skip together
            finite = overflow < 0.5
            grads = self.reducer(grads)
            l1 = self.all_reduce(l1) / self.world
        grads = self.scaler.unscale(grads)
        if self.accum is not None:
            grads = scale_gradients(grads, self.inv_k)
        if self.clip > 0:
            grads = clip_global_norm(grads, self.clip)
        loss = l1 + self.contrastive_weight * con
        if finite:
            loss = ops.depend(loss, self.update(grads, lr_value))
        loss = ops.depend(loss, self.scaler.adjust(finite))
        if self.accum is not None:
            loss = ops.depend(loss, zero_gradients(self.accum))
        return loss, l1, con, finite


class MicroStep(nn.Cell):
    """Micro-batches 1..K-1 of an accumulated step: gradients (scaled domain) added into the step's
    buffers, nothing updated. construct(lr, hr) -> (l1, contrastive) of this micro-batch."""

    def __init__(self, step: TaskStep) -> None:
        super().__init__(auto_prefix=False)
        self.step = step

    def construct(self, lr, hr):
        (_, l1, con), grads = self.step.grad_fn(lr, hr)
        done = accumulate_gradients(self.step.accum, grads)
        if self.step.reducer is not None:
            l1 = self.step.all_reduce(l1) / self.step.world
        return ops.depend(l1, done), con
