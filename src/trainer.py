"""IPT pre-training (all tasks, one task per step) and fine-tuning (one task), with exact resume.

A step trains the shared body plus the drawn task's head, tail and query row, and nothing else:
the optimizer (`SubsetAdam`) keeps one Adam state per parameter, as torch's Adam does, but each
task's compiled step updates only its own parameters (and only its row of the query table), so
the other tasks' weights and moments stay untouched instead of drifting on stale momentum.

Each task's step is one cell (`TaskStep`: `mindspore.value_and_grad` over that task's parameters,
then the update), compiled in GRAPH_MODE on first use and cached. Data parallelism splits every
global batch over the ranks; the contrastive term sees the tokens of the whole global batch
(all-gathered), so W ranks compute the same gradients as one process on the combined batch.

`loss_scale` is a static scale (the loss is multiplied, the gradients divided before clipping and
the update); it matters only for a float16 model on GPU/Ascend, which this code does not build:
the network runs in float32 everywhere (float16 is slower than float32 on CPU).
"""
from __future__ import annotations

import hashlib
import logging
import logging.handlers
import math
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, ParameterTuple, Tensor

from src.checkpoint import CheckpointError, OPTIMIZER_PREFIX, save_checkpoint
from src.config import Config
from src.ipt import IPT
from src.losses import IPTLoss
from src.slots import QUERY_NAME
from src.utils import fmt_seconds, setup_device
from src.weights import (checkpoint_name, list_checkpoints, load_checkpoint, load_pretrained_task,
                         prune_checkpoints, unfinished_checkpoints)

LOG = logging.getLogger(__name__)
RANK_LOG = logging.getLogger(__name__ + ".all_ranks")  # stays on for ranks > 0 (final digest)


class TrainError(ValueError):
    """A training setup that cannot work (reported as a one-line error by train.py)."""


# ----------------------------------------------------------------------------- schedule


def lr_at(step: int, cfg) -> float:
    """Learning rate of 0-based `step`.

    cosine: lr_max annealed to lr_min over `steps` (the paper's pre-training, 5e-5 -> 2e-5);
    constant: lr_min throughout (the paper's fine-tuning at 2e-5).
    """
    schedule = cfg.lr_schedule
    if schedule == "constant":
        return cfg.lr_min
    if schedule == "cosine":
        frac = min(max(step, 0), cfg.steps) / max(cfg.steps, 1)
        return cfg.lr_min + 0.5 * (cfg.lr_max - cfg.lr_min) * (1.0 + math.cos(math.pi * frac))
    raise TrainError(f"lr_schedule must be cosine or constant, not {schedule!r}")


# ----------------------------------------------------------------------------- optimizer

_adam = ops.MultitypeFuncGraph("subset_adam")
_scale = ops.MultitypeFuncGraph("scale")
_square_sum = ops.MultitypeFuncGraph("square_sum")


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor, grad):
    return grad * factor


@_square_sum.register("Tensor")
def _square_sum_tensor(grad):
    return ops.square(grad).sum()


def _adam_values(beta1, beta2, eps, weight_decay, lr, param, m, v, t, grad):
    """torch.optim.Adam's arithmetic, written out (for the row-masked query table)."""
    if weight_decay > 0:
        grad = grad + weight_decay * param
    t_new = t + 1.0
    m_new = beta1 * m + (1.0 - beta1) * grad
    v_new = beta2 * v + (1.0 - beta2) * grad * grad
    bias1 = 1.0 - ops.pow(beta1, t_new)
    bias2 = 1.0 - ops.pow(beta2, t_new)
    denom = ops.sqrt(v_new) / ops.sqrt(bias2) + eps
    return param - (lr / bias1) * m_new / denom, m_new, v_new, t_new


_fused_adam = ops.Adam()


@_adam.register("Number", "Number", "Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor",
                "Tensor", "Tensor")
def _adam_plain(beta1, beta2, eps, weight_decay, lr, param, m, v, t, grad):
    """torch.optim.Adam through the fused kernel (one op instead of ~20: faster to compile and run).

    The kernel adds eps to sqrt(v) before the bias correction; passing eps * sqrt(1 - beta2^t)
    gives torch's lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). L2 weight decay
    is added to the gradient, as in torch's Adam.
    """
    if weight_decay > 0:
        grad = grad + weight_decay * param
    t_new = t + 1.0
    b1_power = ops.pow(beta1, t_new).reshape(())
    b2_power = ops.pow(beta2, t_new).reshape(())
    eps_t = eps * ops.sqrt(1.0 - b2_power)
    done = _fused_adam(param, m, v, b1_power, b2_power, lr, beta1, beta2, eps_t, grad)
    return ops.depend(ops.assign(t, t_new), done)


def _adam_rows(beta1, beta2, eps, weight_decay, lr, param, m, v, t, grad, rows):
    """Adam on the rows where `rows` (R, 1) is True; other rows keep weights, moments and counts."""
    p_new, m_new, v_new, t_new = _adam_values(beta1, beta2, eps, weight_decay, lr, param, m, v, t, grad)
    ops.assign(m, ops.where(rows, m_new, m))
    ops.assign(v, ops.where(rows, v_new, v))
    ops.assign(t, ops.where(rows, t_new, t))
    return ops.assign(param, ops.where(rows, p_new, param))


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
        self.beta1, self.beta2, self.eps, self.weight_decay = hyper
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr):
        done = self.hyper_map(ops.partial(_adam, self.beta1, self.beta2, self.eps, self.weight_decay, lr),
                              self.params, self.m, self.v, self.t, grads[:self.n])
        if self.has_masked:
            q_done = _adam_rows(self.beta1, self.beta2, self.eps, self.weight_decay, lr, self.q[0],
                                self.q[1], self.q[2], self.q[3], grads[self.n], self.rows)
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


# ----------------------------------------------------------------------------- parallel


class GatherTokens(nn.Cell):
    """All-gather of the body tokens over the ranks, in rank order (= global sample order).

    Every rank then computes the same global contrastive loss, so the gradient for its own tokens
    is just its slice of the incoming gradient; it is scaled by the world size because the
    gradient reducer later averages over the ranks.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__()
        self.rank = rank
        self.world_size = world_size
        self.all_gather = ops.AllGather()

    def construct(self, x):
        return self.all_gather(x)

    def bprop(self, x, out, dout):
        n = x.shape[0]
        return (dout[self.rank * n:(self.rank + 1) * n] * self.world_size,)


def init_parallel(cfg) -> Tuple[int, int]:
    """Device setup, plus communication and data-parallel context when `distribute` is on.

    CPU/GPU runs are started by msrun (CPU uses mccl); Ascend also by a rank table with
    RANK_TABLE_FILE/DEVICE_ID/RANK_ID set per process. Returns (rank, world_size).
    """
    if not cfg.distribute:
        setup_device(cfg)
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    if cfg.device_target != "CPU":
        # Rank-table launch: DEVICE_ID per process; msrun: None lets MindSpore pick the local device.
        device = os.environ.get("DEVICE_ID")
        ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == "GRAPH" else ms.PYNATIVE_MODE)
        ms.set_device(cfg.device_target, int(device) if device is not None else None)
    else:
        setup_device(cfg)
    init()
    rank, world = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world)
    return rank, world


# ----------------------------------------------------------------------------- trainer


class TaskStep(nn.Cell):
    """One task's train step: loss, gradients of that task's parameters, (all-reduce), update.

    Holds the task net with auto_prefix=False so the model's parameter names stay unchanged.
    construct(lr, hr, lr_value) -> (loss, l1, contrastive), global over the ranks.
    """

    def __init__(self, net: nn.Cell, loss_fn: IPTLoss, weights: ParameterTuple, update: AdamStep,
                 loss_scale: float, grad_clip: float, rank: int, world_size: int) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss_fn = loss_fn
        self.weights = weights
        self.update = update
        self.contrastive_weight = loss_fn.weight
        self.scale = float(loss_scale)
        self.inv_scale = Tensor(1.0 / self.scale, ms.float32)
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
        return loss * self.scale, l1, con

    def construct(self, lr, hr, lr_value):
        (_, l1, con), grads = self.grad_fn(lr, hr)
        if self.reducer is not None:
            grads = self.reducer(grads)
            l1 = self.all_reduce(l1) / self.world  # for logging: the global batch's L1
        if self.scale != 1.0:
            grads = scale_gradients(grads, self.inv_scale)
        if self.clip > 0:
            grads = clip_global_norm(grads, self.clip)
        done = self.update(grads, lr_value)
        return ops.depend(l1 + self.contrastive_weight * con, done), l1, con


class Trainer:
    """A model, its optimizer state and one compiled train step per task."""

    def __init__(self, cfg, model: IPT, rank: int = 0, world_size: int = 1) -> None:
        self.cfg = cfg
        self.model = model
        self.rank, self.world_size = rank, world_size
        self.loss_scale = cfg.loss_scale
        self.grad_clip = cfg.grad_clip
        self.loss = IPTLoss(cfg.contrastive_weight, cfg.contrastive_temperature)
        self.row_masked = model.num_queries > 1 and any(p.name == QUERY_NAME for p in model.get_parameters())
        self.optimizer = SubsetAdam(model.trainable_params(), cfg.betas, cfg.eps,
                                    cfg.weight_decay, (QUERY_NAME,) if self.row_masked else ())
        self._steps: Dict[int, TaskStep] = {}
        self.compile_seconds: Dict[str, float] = {}  # task -> duration of its first (compiling) call

    def task_params(self, slot: int) -> Tuple[List[Parameter], Optional[Parameter]]:
        """Parameters a step of task `slot` trains: the body, head[slot], tail[slot], and the query
        table, returned apart when only its row `slot` may move (a multi-query model)."""
        plain, masked = [], None
        for p in self.model.slot_params(slot):
            if p.name == QUERY_NAME and self.row_masked:
                masked = p
            else:
                plain.append(p)
        return plain, masked

    def _build(self, slot: int) -> "TaskStep":
        net = self.model.task_net(self.model.tasks[slot].name, with_tokens=True)
        plain, masked = self.task_params(slot)
        weights = ParameterTuple(plain + ([masked] if masked is not None else []))
        step = TaskStep(net, self.loss, weights, self.optimizer.step_cell(plain, masked, slot),
                        self.loss_scale, self.grad_clip, self.rank, self.world_size)
        return step  # a Cell: compiled on its first call in GRAPH_MODE, run eagerly in PYNATIVE

    def step_fn(self, slot: int):
        """The cached train step of task `slot`: (lr, hr, lr_value) -> (loss, l1, contrastive)."""
        if slot not in self._steps:
            self._steps[slot] = self._build(slot)
        return self._steps[slot]

    def train_step(self, slot: int, lr: np.ndarray, hr: np.ndarray, lr_value: float) -> Tuple[float, float, float]:
        """One optimizer step of task `slot` on this rank's part of the batch; global loss parts."""
        fn = self.step_fn(slot)
        first = self.model.tasks[slot].name not in self.compile_seconds
        start = time.perf_counter()
        loss, l1, con = fn(Tensor(lr, ms.float32), Tensor(hr, ms.float32), Tensor(lr_value, ms.float32))
        values = float(loss.asnumpy()), float(l1.asnumpy()), float(con.asnumpy())
        if first:
            self.compile_seconds[self.model.tasks[slot].name] = time.perf_counter() - start
        return values

    # -- checkpoints

    def checkpoint_extra(self, step: int, lr_value: float) -> dict:
        """Optimizer state and run position for a checkpoint.

        Numbers are stored as strings: read_checkpoint treats only string entries as metadata
        (a numeric append_dict value comes back as a Parameter and would break strict loading).
        """
        extra = dict(self.optimizer.state())
        extra.update({"step": str(step), "seed": str(self.cfg.seed), "lr": repr(float(lr_value)),
                      "train_mode": str(self.cfg.train_mode)})
        return extra


def weights_digest(model: nn.Cell) -> str:
    """SHA-256 of every parameter (name, shape, bytes): equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for p in model.get_parameters():
        h.update(p.name.encode())
        h.update(np.ascontiguousarray(p.asnumpy()).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- models


def model_config(cfg) -> Config:
    """The config the model is built from: all `tasks` for pretrain, `[task]` for finetune."""
    mode = cfg.train_mode
    if mode == "pretrain":
        return Config(cfg)
    if mode == "finetune":
        return Config(cfg, tasks=[cfg.task], num_queries=None)
    raise TrainError(f"train_mode must be pretrain or finetune, not {mode!r}")


def _meta_number(meta: dict, key: str, kind=int):
    value = meta.get(key)
    if value is None:
        raise CheckpointError(f"checkpoint metadata lacks '{key}' (not written by train.py?)")
    if hasattr(value, "asnumpy"):
        value = value.asnumpy().item()
    return kind(value)


# ----------------------------------------------------------------------------- the run


def prepare_out_dir(cfg, rank: int) -> Optional[Path]:
    """The checkpoint to resume from, or None for a fresh run; refuses to clobber a used out_dir."""
    out_dir = Path(cfg.out_dir)
    ckpts = list_checkpoints(out_dir)
    if cfg.resume:
        stale = unfinished_checkpoints(out_dir) if rank == 0 else []
        for path in stale:  # a save killed mid-write; the checkpoint it was writing is not listed
            path.unlink()
        if stale:
            LOG.warning("resume: removed %d unfinished checkpoint file(s) of a killed save: %s", len(stale),
                        ", ".join(p.name for p in stale))
        if ckpts:
            return ckpts[-1][1]
        LOG.warning("resume: no checkpoint in %s, starting from step 0", out_dir)
        return None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not cfg.overwrite:
            raise TrainError(f"out_dir {out_dir} is not empty: pass --resume true to continue or "
                             f"--overwrite true to start over")
        if rank == 0:
            old = [p for _, p in ckpts] + [p for p in (out_dir / "train.log",) if p.exists()]
            for path in old:
                path.unlink()
            LOG.warning("overwrite: removed %d old checkpoint(s)/log from %s", len(old), out_dir)
    return None


def _check_cfg(cfg) -> None:
    """What can be checked before anything is created (each value itself was checked by
    src/config_schema.py): the training images, the --pretrained file, a writable out_dir."""
    from src.dataset import resolve_data_path
    from src.image_io import IMAGE_EXTENSIONS
    from src.utils import check_output_dir
    root = resolve_data_path(cfg.train_path)
    if not root.is_dir():
        raise TrainError(f"train_path not found: {cfg.train_path}")
    if next((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS), None) is None:
        raise TrainError(f"train_path {cfg.train_path} holds no images ({'/'.join(sorted(IMAGE_EXTENSIONS))})")
    if cfg.pretrained and not Path(cfg.pretrained).is_file() and not cfg.resume:
        raise TrainError(f"pretrained checkpoint not found: {cfg.pretrained}")
    check_output_dir(cfg.out_dir, "out_dir")
    if cfg.device_target == "CPU" and cfg.loss_scale != 1.0:
        LOG.warning("loss_scale %s on CPU: the model runs in float32 there, scaling only costs time",
                    cfg.loss_scale)


class RunLog:
    """Rank 0's copy of the log in out_dir/train.log (appended on resume).

    Records are buffered until `attach`: in a data-parallel run rank 0 must not write into out_dir
    before every rank has checked that it may use it (the first step's collectives guarantee that).
    """

    def __init__(self, enabled: bool) -> None:
        self.buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1) \
            if enabled else None
        self.file: Optional[logging.Handler] = None
        if self.buffer is not None:
            logging.getLogger().addHandler(self.buffer)

    def attach(self, out_dir: Path) -> None:
        if self.buffer is None or self.file is not None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(out_dir / "train.log", mode="a")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        self.buffer.setTarget(self.file)
        self.buffer.flush()
        logging.getLogger().removeHandler(self.buffer)
        logging.getLogger().addHandler(self.file)

    def close(self) -> None:
        for handler in (self.buffer, self.file):
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()


def build_run(cfg, rank: int, world: int) -> Tuple[Config, IPT, Trainer, int]:
    """Model, trainer and first step: fresh, from --pretrained, or resumed from out_dir."""
    mcfg = model_config(cfg)
    resume_from = prepare_out_dir(cfg, rank)
    ms.set_seed(cfg.seed)
    model = IPT(mcfg)
    trainer = Trainer(mcfg, model, rank, world)
    if resume_from is not None:
        meta = load_checkpoint(model, resume_from, mcfg)
        saved_seed = _meta_number(meta, "seed")
        if saved_seed != cfg.seed:
            raise TrainError(f"{resume_from} was trained with seed {saved_seed}, the config has seed "
                             f"{cfg.seed}: resume with --seed {saved_seed}")
        if meta.get("train_mode") and str(meta["train_mode"]) != cfg.train_mode:
            raise TrainError(f"{resume_from} is a {meta['train_mode']} run, the config says {cfg.train_mode}")
        trainer.optimizer.load_state(meta["optimizer"], str(resume_from))
        start = _meta_number(meta, "step")
        LOG.info("resuming from %s at step %d", resume_from, start)
        return mcfg, model, trainer, start
    if cfg.pretrained:
        if cfg.train_mode == "finetune":
            load_pretrained_task(model, cfg.pretrained, mcfg)
        else:
            load_checkpoint(model, cfg.pretrained, mcfg)
    elif cfg.train_mode == "finetune":
        LOG.warning("fine-tuning from random weights (no --pretrained checkpoint given)")
    if cfg.train_mode == "finetune" and cfg.lr_schedule != "constant":
        LOG.info("lr_schedule %s; the paper fine-tunes with a constant 2e-5 (--lr_schedule constant)",
                 cfg.lr_schedule)
    return mcfg, model, trainer, 0


def fit(cfg) -> dict:
    """Train as configured (see default_config.yaml, training section); returns a summary dict."""
    _check_cfg(cfg)
    rank, world = init_parallel(cfg)
    if rank != 0:  # only rank 0 reports progress
        logging.getLogger().setLevel(logging.WARNING)
        RANK_LOG.setLevel(logging.INFO)
    run_log = RunLog(enabled=rank == 0)
    try:
        mcfg, model, trainer, start = build_run(cfg, rank, world)
        if world == 1:
            run_log.attach(Path(cfg.out_dir))
        return _train(cfg, mcfg, model, trainer, start, rank, world, run_log)
    finally:
        run_log.close()


def _train(cfg, mcfg: Config, model: IPT, trainer: Trainer, start: int, rank: int, world: int,
           run_log: RunLog) -> dict:
    from src.dataset import create_train_dataset

    steps = cfg.steps
    end = steps if not cfg.stop_after else min(steps, start + cfg.stop_after)
    if start >= steps:
        LOG.info("nothing to do: the run already reached step %d of %d", start, steps)
        return {"step": start, "digest": weights_digest(model), "rank": rank, "losses": []}
    try:
        dataset = create_train_dataset(cfg, model.task_names, rank=rank, world_size=world, start_step=start)
    except (ValueError, OSError) as err:
        raise TrainError(f"training data: {err}") from None
    LOG.info("%s: %s, tasks %s, %d params, global batch %d on %d rank(s), steps %d..%d of %d, out_dir %s",
             cfg.train_mode, cfg.config_path, ",".join(model.task_names), model.num_parameters(),
             cfg.batch_size, world, start, end, steps, cfg.out_dir)

    out_dir = Path(cfg.out_dir)
    log_every, save_every = max(cfg.log_every, 1), cfg.save_every
    losses: List[Tuple[int, str, float, float, float]] = []
    window_start, window_steps = time.perf_counter(), 0
    step = start
    for lr_batch, hr_batch, slot in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        if step >= end:
            break
        slot, task = int(slot), model.task_names[int(slot)]
        lr_value = lr_at(step, cfg)
        compiled = len(trainer.compile_seconds)
        loss, l1, con = trainer.train_step(slot, lr_batch, hr_batch, lr_value)
        if len(trainer.compile_seconds) > compiled:
            LOG.info("compiled the %s train step (first call %.1f s)", task, trainer.compile_seconds[task])
        if not math.isfinite(loss):
            raise TrainError(f"loss is {loss} at step {step + 1} (task {task}): lower lr_max/lr_min or "
                             f"set grad_clip")
        step += 1
        window_steps += 1
        losses.append((step, task, loss, l1, con))
        run_log.attach(out_dir)  # every rank has passed its out_dir check once a step is done
        if step % log_every == 0 or step == end:
            now = time.perf_counter()
            rate = window_steps * cfg.batch_size / max(now - window_start, 1e-9)
            eta = (end - step) * (now - window_start) / max(window_steps, 1)
            LOG.info("step %d/%d task %s loss %.4f (l1 %.4f contrastive %.4f) lr %.3g %.1f samples/s ETA %s",
                     step, steps, task, loss, l1, con, lr_value, rate, fmt_seconds(eta))
            window_start, window_steps = time.perf_counter(), 0
        if rank == 0 and ((save_every > 0 and step % save_every == 0) or step == end):
            path = save_checkpoint(model, out_dir / checkpoint_name(step), mcfg,
                                   extra=trainer.checkpoint_extra(step, lr_value))
            prune_checkpoints(out_dir, cfg.keep_last)
            LOG.info("saved %s", path)
    digest = weights_digest(model)
    RANK_LOG.info("rank %d finished at step %d, weights digest %s", rank, step, digest)
    return {"step": step, "digest": digest, "rank": rank, "losses": losses,
            "compile_seconds": dict(trainer.compile_seconds)}

