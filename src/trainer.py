"""IPT pre-training (all tasks, one task per step) and fine-tuning (one task), with exact resume.

This module holds the train step, the loop and the run's log; the pieces it drives live apart:
Adam and gradient clipping in src/optim.py (`SubsetAdam`: a step updates only the drawn task's
head, tail and query row plus the body), data parallelism in src/parallel.py, checkpoint names,
resume files and fine-tuning loads in src/weights.py.

Each task's step is one cell (`TaskStep`: `mindspore.value_and_grad` over that task's parameters,
then the update), compiled in GRAPH_MODE on first use and cached. In a data-parallel run the
gradients are averaged over the ranks and the contrastive tokens all-gathered, so W ranks compute
the same gradients as one process on the combined batch.

`loss_scale` is a static scale (the loss is multiplied, the gradients divided before clipping and
the update); it matters only for a float16 model on GPU/Ascend, which this code does not build:
the network runs in float32 everywhere (float16 is slower than float32 on CPU).
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, ParameterTuple, Tensor

from src.checkpoint import CheckpointError
from src.ema import EMA
from src.config import Config
from src.ipt import IPT
from src.losses import IPTLoss
from src.optim import AdamStep, SubsetAdam, clip_global_norm, scale_gradients
from src.parallel import GatherTokens
from src.slots import QUERY_NAME
from src.weights import list_checkpoints, load_checkpoint, load_pretrained_task, unfinished_checkpoints

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
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
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
        if self.ema is not None:
            self.ema.update()
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
        if self.ema is not None:
            extra.update(self.ema.state())
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


def check_train_config(cfg) -> None:
    """What can be checked before anything is created (each value itself was checked by
    src/config_schema.py): the training images, the --pretrained file, a writable out_dir."""
    from src.dataset import resolve_data_path
    from src.image_io import IMAGE_EXTENSIONS, has_images
    from src.mindrecord_data import is_mindrecord_dir
    from src.utils import check_output_dir
    root = resolve_data_path(cfg.train_path)
    if not root.is_dir():
        raise TrainError(f"train_path not found: {cfg.train_path}")
    if not is_mindrecord_dir(root) and not has_images(root):
        raise TrainError(f"train_path {cfg.train_path} holds no images ({'/'.join(sorted(IMAGE_EXTENSIONS))})")
    if cfg.pretrained and not Path(cfg.pretrained).is_file() and not cfg.resume:
        raise TrainError(f"pretrained checkpoint not found: {cfg.pretrained}")
    check_output_dir(cfg.out_dir, "out_dir")
    if cfg.device_target == "CPU" and cfg.loss_scale != 1.0:
        LOG.warning("loss_scale %s on CPU: the model runs in float32 there, scaling only costs time",
                    cfg.loss_scale)


def build_run(cfg, rank: int, world: int) -> Tuple[Config, IPT, Trainer, int, dict]:
    """Model, trainer, first step and the resumed checkpoint's metadata ({} for a fresh run):
    fresh, from --pretrained, or resumed from out_dir."""
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
        if trainer.ema is not None:
            try:
                trainer.ema.load_state(meta["ema"], str(resume_from))
            except ValueError as err:
                raise TrainError(str(err)) from None
        start = _meta_number(meta, "step")
        LOG.info("resuming from %s at step %d", resume_from, start)
        return mcfg, model, trainer, start, meta
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
    return mcfg, model, trainer, 0, {}
