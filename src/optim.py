"""Adam for IPT's task-by-task training, and the gradient helpers of a train step.

A pre-training step trains the shared body plus the drawn task's head, tail and query row, and
nothing else. `SubsetAdam` keeps one Adam state per parameter, as torch's Adam does, but each
task's compiled update (`AdamStep`) touches only its own parameters (and only its row of the query
table), so the other tasks' weights and moments stay untouched instead of drifting on stale
momentum. The arithmetic is torch.optim.Adam's; `clip_global_norm` is torch's clip_grad_norm_.
Everything here runs inside compiled train steps (GRAPH_MODE), so it lives in this real file.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from mindspore import nn, ops, Parameter, ParameterTuple, Tensor

from src.checkpoint import CheckpointError, OPTIMIZER_PREFIX
from src.common import expand_to

_adam = ops.MultitypeFuncGraph("subset_adam")
_scale = ops.MultitypeFuncGraph("scale")
_square_sum = ops.MultitypeFuncGraph("square_sum")
_add = ops.MultitypeFuncGraph("add")
_assign_add = ops.MultitypeFuncGraph("assign_add")
_zero = ops.MultitypeFuncGraph("zero")


@_add.register("Tensor", "Tensor")
def _add_tensor(grad, buffer):
    return grad + buffer


@_assign_add.register("Tensor", "Tensor")
def _assign_add_tensor(buffer, grad):
    return ops.assign_add(buffer, grad)


@_zero.register("Tensor")
def _zero_tensor(buffer):
    return ops.assign(buffer, ops.zeros_like(buffer))


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor, grad):
    return grad * factor


@_square_sum.register("Tensor")
def _square_sum_tensor(grad):
    return ops.square(grad).sum()


def _adam_values(beta1, beta2, eps, weight_decay, lr, param, m, v, t, grad):
    """torch.optim.Adam's arithmetic, written out (for the row-masked query table).

    `t` holds one step count per row (R, 1): the bias corrections are computed per row and only
    then expanded to the parameter's shape (src/common.expand_to), the same values as computing
    them on every element, without two Pows over the whole table (6 ms each for IPT-base's).
    """
    if weight_decay > 0:
        grad = grad + weight_decay * param
    t_new = t + 1.0
    m_new = beta1 * m + (1.0 - beta1) * grad
    v_new = beta2 * v + (1.0 - beta2) * grad * grad
    bias1 = 1.0 - ops.pow(beta1, t_new)
    bias2 = 1.0 - ops.pow(beta2, t_new)
    denom = ops.sqrt(v_new) / expand_to(ops.sqrt(bias2), param) + eps
    return param - expand_to(lr / bias1, param) * m_new / denom, m_new, v_new


_fused_adam = ops.Adam()


@_adam.register("Number", "Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                "Tensor", "Tensor", "Tensor", "Tensor")
def _adam_plain(beta1, beta2, weight_decay, lr, param, m, v, t, t_new, b1_power, b2_power, eps_t, grad):
    """torch.optim.Adam through the fused kernel (one op instead of ~20: faster to compile and run).

    The kernel adds eps to sqrt(v) before the bias correction; passing eps * sqrt(1 - beta2^t)
    gives torch's lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). L2 weight decay
    is added to the gradient, as in torch's Adam. The powers come from `AdamStep`.
    """
    if weight_decay > 0:
        grad = grad + weight_decay * param
    done = _fused_adam(param, m, v, b1_power, b2_power, lr, beta1, beta2, eps_t, grad)
    return ops.depend(ops.assign(t, t_new), done)


def _adam_rows(beta1, beta2, eps, weight_decay, lr, param, m, v, t, grad, rows, rows_full):
    """Adam on the rows where `rows` (R, 1) is True (`rows_full`: the same, param-shaped); other rows
    keep weights, moments and counts. The per-row corrections are expanded to the parameter's shape
    (src/common.expand_to: no implicitly broadcasting op kept by the compiled graph)."""
    p_new, m_new, v_new = _adam_values(beta1, beta2, eps, weight_decay, lr, param, m, v, t, grad)
    ops.assign(m, ops.where(rows_full, m_new, m))
    ops.assign(v, ops.where(rows_full, v_new, v))
    ops.assign(t, ops.where(rows, t + 1.0, t))
    return ops.assign(param, ops.where(rows_full, p_new, param))


class AdamStep(nn.Cell):
    """The update of one task's parameters (a view on a SubsetAdam's state); construct(grads, lr).

    `grads` follow `params`; a last, row-masked parameter (the shared query table) is optional.
    """

    def __init__(self, params, moments, sizes, masked, rows, hyper) -> None:
        super().__init__()
        self.params = ParameterTuple(params)
        self.m = ParameterTuple(moments[0])
        self.v = ParameterTuple(moments[1])
        self.t = ParameterTuple(sizes)
        self.n = len(params)
        self.has_masked = masked is not None
        if self.has_masked:
            self.q = ParameterTuple([masked[0], masked[1], masked[2], masked[3]])
            self.rows = Tensor(rows)
            self.rows_full = Tensor(np.ascontiguousarray(np.broadcast_to(rows, masked[0].shape)))
        self.beta1, self.beta2, self.eps, self.weight_decay = hyper
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr):
        # Every parameter keeps its own step count; their bias corrections are computed as one
        # vector (a handful of graph nodes instead of ~8 per parameter: IPT-base has ~290
        # parameters, and MindSpore keeps every compiled node in memory for the graph's life).
        t_new = ops.concat(self.t) + 1.0
        b1_power = ops.pow(self.beta1, t_new)
        b2_power = ops.pow(self.beta2, t_new)
        eps_t = self.eps * ops.sqrt(1.0 - b2_power)
        done = self.hyper_map(ops.partial(_adam, self.beta1, self.beta2, self.weight_decay, lr),
                              self.params, self.m, self.v, self.t, ops.split(t_new, 1), ops.unstack(b1_power),
                              ops.unstack(b2_power), ops.unstack(eps_t), grads[:self.n])
        if self.has_masked:
            q_done = _adam_rows(self.beta1, self.beta2, self.eps, self.weight_decay, lr, self.q[0],
                                self.q[1], self.q[2], self.q[3], grads[self.n], self.rows, self.rows_full)
            return ops.depend(done, q_done)
        return done


class SubsetAdam:
    """Adam state for every trainable parameter of a model, updated task by task.

    Like torch's Adam with parameters that got no gradient: a parameter (or query row) that a
    step does not train keeps its value, its moments and its own step count (bias correction).
    State names: `optimizer.m.<param>`, `optimizer.v.<param>`, `optimizer.step.<param>`.
    """

    def __init__(self, params: Sequence[Parameter], betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, row_counted: Sequence[str] = ()) -> None:
        self.params = list(params)
        self.hyper = (float(betas[0]), float(betas[1]), float(eps), float(weight_decay))
        self.m: Dict[str, Parameter] = {}
        self.v: Dict[str, Parameter] = {}
        self.t: Dict[str, Parameter] = {}
        for p in self.params:
            self.m[p.name] = Parameter(Tensor(np.zeros(p.shape, np.float32)), name=f"{OPTIMIZER_PREFIX}m.{p.name}",
                                       requires_grad=False)
            self.v[p.name] = Parameter(Tensor(np.zeros(p.shape, np.float32)), name=f"{OPTIMIZER_PREFIX}v.{p.name}",
                                       requires_grad=False)
            count_shape = (p.shape[0], 1) if p.name in row_counted else (1,)
            self.t[p.name] = Parameter(Tensor(np.zeros(count_shape, np.float32)),
                                       name=f"{OPTIMIZER_PREFIX}step.{p.name}", requires_grad=False)

    def step_cell(self, params: Sequence[Parameter], masked: Optional[Parameter] = None,
                  row: int = 0) -> AdamStep:
        """The update cell for `params` (+ row `row` of `masked`), sharing this optimizer's state."""
        names = [p.name for p in params]
        moments = ([self.m[n] for n in names], [self.v[n] for n in names])
        sizes = [self.t[n] for n in names]
        rows = None
        q = None
        if masked is not None:
            n = masked.name
            q = (masked, self.m[n], self.v[n], self.t[n])
            rows = (np.arange(masked.shape[0]) == row).reshape(-1, 1)
        return AdamStep(params, moments, sizes, q, rows, self.hyper)

    def state(self) -> Dict[str, Tensor]:
        """Every state tensor by its checkpoint name."""
        out = {}
        for table in (self.m, self.v, self.t):
            out.update({p.name: Tensor(p.asnumpy()) for p in table.values()})
        return out

    def load_state(self, state: Dict[str, Tensor], source: str) -> None:
        """Restore from checkpoint entries, strictly: every name present, same shapes, nothing extra."""
        own = {p.name: p for table in (self.m, self.v, self.t) for p in table.values()}
        missing = [n for n in own if n not in state]
        extra = [n for n in state if n not in own]
        if missing or extra:
            what = f"lacks '{missing[0]}'" if missing else f"has unknown '{extra[0]}'"
            raise CheckpointError(f"{source}: optimizer state {what} (not a checkpoint of this run's "
                                  f"model and tasks?)")
        for name, param in own.items():
            value = state[name]
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"{source}: optimizer entry '{name}' has shape {tuple(value.shape)}, "
                                      f"expected {tuple(param.shape)}")
            param.set_data(Tensor(np.asarray(value.asnumpy(), np.float32)))


_HYPER_MAP = ops.HyperMap()


def clip_global_norm(grads, max_norm: float):
    """torch.nn.utils.clip_grad_norm_: scale all gradients by max_norm / (norm + 1e-6) when above."""
    total = ops.sqrt(ops.addn(_HYPER_MAP(_square_sum, grads)))
    coef = ops.minimum(max_norm / (total + 1e-6), 1.0)
    return _HYPER_MAP(ops.partial(_scale, coef), grads)


def scale_gradients(grads, factor):
    """Every gradient times `factor` (undoing a static loss scale)."""
    return _HYPER_MAP(ops.partial(_scale, factor), grads)


def add_gradients(grads, buffers):
    """grads + the accumulated micro-batch gradients (element by element, same order)."""
    return _HYPER_MAP(_add, grads, buffers)


def accumulate_gradients(buffers, grads):
    """buffers += grads (a micro-batch of an accumulated step)."""
    return _HYPER_MAP(_assign_add, buffers, grads)


def zero_gradients(buffers):
    """Empty the accumulation buffers after the step that used them."""
    return _HYPER_MAP(_zero, buffers)


def gradient_buffers(params: Sequence[Parameter]) -> Dict[str, Parameter]:
    """One float32 accumulation buffer per parameter (`accumulate.<name>`, not checkpointed: a
    checkpoint is written between optimizer steps, when every buffer is zero)."""
    return {p.name: Parameter(Tensor(np.zeros(p.shape, np.float32)), name=f"accumulate.{p.name}",
                              requires_grad=False) for p in params}
