"""IPT pre-training (all tasks, one task per step) and fine-tuning (one task), with exact resume.

This module holds the trainer (a model, its optimizer, loss scale and compiled steps) and the set-up
of a run; the loop is src/train_loop.py, the step cells src/train_step.py, and the rest lives apart:
Adam and gradient clipping in src/optim.py (`SubsetAdam`: a step updates only the drawn task's
head, tail and query row plus the body), data parallelism in src/parallel.py, checkpoint names,
resume files and fine-tuning loads in src/weights.py.

Each task's step is one cell (`TaskStep`: `mindspore.value_and_grad` over that task's parameters,
then the update), compiled in GRAPH_MODE on first use and cached. In a data-parallel run the
gradients are averaged over the ranks and the contrastive tokens all-gathered, so W ranks compute
the same gradients as one process on the combined batch.

Precision (src/precision.py): `--amp_level O0..O3` and `--compute_dtype` convert the model in
place; parameters, Adam state and checkpoints stay float32. `--loss_scale_mode static` multiplies
the loss by `loss_scale` and divides the gradients (none of it for 1: O0 keeps its numerics bit for
bit); `dynamic` uses amp.DynamicLossScaler: an overflowing step is skipped on every rank, the scale
divided by `loss_scale_factor`, and multiplied after `loss_scale_window` clean steps. The scale, its
counter and the overflow count are in the checkpoint, so --resume continues with them.
`--accumulate K` sums the gradients of K micro-batches of batch_size (one task, K x batch_size
drawn per step) before one update of their mean; see `TaskStep` and `Trainer.train_step`.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, Parameter, ParameterTuple, Tensor

from src.checkpoint import CheckpointError
from src.ema import EMA
from src.config import Config
from src.ipt import IPT
from src.losses import IPTLoss
from src.optim import SubsetAdam, clip_global_norm, gradient_buffers  # noqa: F401 (clip_global_norm: tests)
from src.precision import LossScaling, apply_precision, make_loss_scaling
from src.slots import QUERY_NAME
from src.train_step import MicroStep, TaskStep
from src.utils import release_freed_memory
from src.weights import (list_checkpoints, load_checkpoint, load_pretrained_task, load_warm_start,
                         unfinished_checkpoints)

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


class Trainer:
    """A model, its optimizer state, its loss scale and one compiled train step per task.

    `cfg.amp_level` / `cfg.compute_dtype` convert the model in place (src/precision.py) before any
    step is compiled; `loss_scale` (current value) and `overflows` (skipped steps) follow the run.
    """

    def __init__(self, cfg, model: IPT, rank: int = 0, world_size: int = 1) -> None:
        self.cfg = cfg
        self.model = model
        self.rank, self.world_size = rank, world_size
        apply_precision(model, getattr(cfg, "amp_level", "O0"), getattr(cfg, "compute_dtype", "float16"))
        self.scaling: LossScaling = make_loss_scaling(cfg)
        self.accumulate = int(getattr(cfg, "accumulate", 1))
        self.grad_clip = cfg.grad_clip
        self.loss = IPTLoss(cfg.contrastive_weight, cfg.contrastive_temperature)
        self.row_masked = model.num_queries > 1 and any(p.name == QUERY_NAME for p in model.get_parameters())
        self.optimizer = SubsetAdam(model.trainable_params(), cfg.betas, cfg.eps,
                                    cfg.weight_decay, (QUERY_NAME,) if self.row_masked else ())
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
        self.buffers = gradient_buffers(model.trainable_params()) if self.accumulate > 1 else {}
        self._steps: Dict[int, TaskStep] = {}
        self._micro: Dict[int, MicroStep] = {}
        self.compile_seconds: Dict[str, float] = {}  # task -> duration of its first (compiling) call
        self.position = 0          # optimizer steps done (build_run sets it on resume)
        self.overflows = 0         # steps skipped on a gradient overflow, over the whole run
        self.last_skipped = False
        self._inject = _injected_overflows(rank)

    @property
    def loss_scale(self) -> float:
        """The current loss scale (a dynamic one moves; read from the compiled steps' Parameter)."""
        return self.scaling.value

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
        trained = plain + ([masked] if masked is not None else [])
        weights = ParameterTuple(trained)
        accum = ParameterTuple([self.buffers[p.name] for p in trained]) if self.buffers else None
        step = TaskStep(net, self.loss, weights, self.optimizer.step_cell(plain, masked, slot),
                        self.scaling, self.grad_clip, self.rank, self.world_size, accum, self.accumulate)
        return step  # a Cell: compiled on its first call in GRAPH_MODE, run eagerly in PYNATIVE

    def step_fn(self, slot: int):
        """The cached train step of task `slot`: (lr, hr, lr_value) -> (loss, l1, contrastive, finite)."""
        if slot not in self._steps:
            self._steps[slot] = self._build(slot)
        return self._steps[slot]

    def micro_fn(self, slot: int) -> MicroStep:
        """The cached gradient-accumulating cell of task `slot` (micro-batches 1..K-1)."""
        if slot not in self._micro:
            self._micro[slot] = MicroStep(self.step_fn(slot))
        return self._micro[slot]

    def micro_batches(self, lr, hr) -> List[Tuple[np.ndarray, np.ndarray]]:
        """The K micro-batches of one optimizer step: given as lists, or one array of K x B samples
        split in order into K equal parts (the data source draws K x batch_size per step)."""
        if isinstance(lr, (list, tuple)):
            pairs = list(zip(lr, hr))
        else:
            k = self.accumulate
            if len(lr) % k:
                raise TrainError(f"{len(lr)} samples cannot be split into --accumulate {k} micro-batches")
            pairs = list(zip(np.split(np.asarray(lr), k), np.split(np.asarray(hr), k)))
        if len(pairs) != self.accumulate:
            raise TrainError(f"got {len(pairs)} micro-batches for --accumulate {self.accumulate}")
        return pairs

    def train_step(self, slot: int, lr, hr, lr_value: float) -> Tuple[float, float, float]:
        """One optimizer step of task `slot` on this rank's part of the batch; global loss parts.

        lr/hr: one batch, or (accumulate K > 1) a list of K micro-batches or one array of K x B.
        The loss parts are the means over the micro-batches (the contrastive term is computed per
        micro-batch). A step skipped on overflow sets `last_skipped` and counts in `overflows`.
        """
        pairs = self.micro_batches(lr, hr) if self.accumulate > 1 or isinstance(lr, (list, tuple)) else [(lr, hr)]
        if self.position + 1 in self._inject:  # test hook (IPT_TEST_INF_STEPS): an inf pixel
            bad = np.array(pairs[0][0], np.float32, copy=True)
            bad.flat[0] = np.inf
            pairs[0] = (bad, pairs[0][1])
        fn = self.step_fn(slot)
        first = self.model.tasks[slot].name not in self.compile_seconds
        start = time.perf_counter()
        if first:
            self._compile(slot, pairs)
        parts = []
        for m_lr, m_hr in pairs[:-1]:
            l1, con = self.micro_fn(slot)(Tensor(m_lr, ms.float32), Tensor(m_hr, ms.float32))
            parts.append((float(l1.asnumpy()), float(con.asnumpy())))
        m_lr, m_hr = pairs[-1]
        _, l1, con, finite = fn(Tensor(m_lr, ms.float32), Tensor(m_hr, ms.float32), Tensor(lr_value, ms.float32))
        parts.append((float(l1.asnumpy()), float(con.asnumpy())))
        l1_mean = float(np.mean([p[0] for p in parts]))
        con_mean = float(np.mean([p[1] for p in parts]))
        values = l1_mean + self.loss.weight * con_mean, l1_mean, con_mean
        if first:
            self.compile_seconds[self.model.tasks[slot].name] = time.perf_counter() - start
        self.position += 1
        self.last_skipped = not bool(finite.asnumpy())
        if self.ema is not None and not self.last_skipped:  # a skipped step leaves the average too
            self.ema.update(self.position)
        if self.last_skipped:
            self.overflows += 1
            LOG.warning("step %d skipped: gradient overflow (inf/nan), loss scale now %g (%d overflow(s))",
                        self.position, self.loss_scale, self.overflows)
        return values

    def _compile(self, slot: int, pairs) -> None:
        """Compile task `slot`'s step (and micro-step) before their first run, then return the
        compiler's freed memory to the OS, so that it is not part of the training's peak."""
        if ms.get_context("mode") != ms.GRAPH_MODE:
            return
        m_lr, m_hr = (Tensor(a, ms.float32) for a in pairs[-1])
        if len(pairs) > 1:
            self.micro_fn(slot).compile(m_lr, m_hr)
        self.step_fn(slot).compile(m_lr, m_hr, Tensor(0.0, ms.float32))
        release_freed_memory()

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
                      "train_mode": str(self.cfg.train_mode), "overflows": str(self.overflows)})
        extra.update(self.scaling.state())
        return extra

    def load_run_state(self, meta: dict, step: int, source: str) -> None:
        """Resume: the loss scale, its counter, the overflow count and the step position."""
        self.scaling.load_state(meta, source)
        self.overflows = int(str(meta.get("overflows", "0")))
        self.position = step


def _injected_overflows(rank: int) -> set:
    """Test hook: IPT_TEST_INF_STEPS="3,1:5" puts an inf pixel into step 3 (every rank) and into
    step 5 on rank 1 only; the steps are 1-based optimizer steps of the run."""
    steps = set()
    for item in filter(None, os.environ.get("IPT_TEST_INF_STEPS", "").split(",")):
        where, _, step = item.rpartition(":")
        if not where or int(where) == rank:
            steps.add(int(step))
    return steps


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
    src/config_schema.py): the training images, the --pretrained / --init_from file, a writable out_dir."""
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
    if cfg.get("init_from"):
        if cfg.pretrained or cfg.train_mode != "finetune":
            raise TrainError("--init_from warm-starts a finetune run; it does not go with --pretrained "
                             "or --train_mode pretrain")
        if not Path(cfg.init_from).is_file() and not cfg.resume:
            raise TrainError(f"init_from checkpoint not found: {cfg.init_from}")
    check_output_dir(cfg.out_dir, "out_dir")
    if cfg.device_target == "CPU" and cfg.loss_scale != 1.0 and cfg.amp_level == "O0":
        LOG.warning("loss_scale %s with amp_level O0: the model runs in float32, scaling only costs time",
                    cfg.loss_scale)


def build_run(cfg, rank: int, world: int) -> Tuple[Config, IPT, Trainer, int, dict]:
    """Model, trainer, first step and the resumed checkpoint's metadata ({} for a fresh run):
    fresh, from --pretrained or --init_from, or resumed from out_dir. The trainer comes after the
    weights, so that its EMA starts from them, not from the random initialisation."""
    mcfg = model_config(cfg)
    resume_from = prepare_out_dir(cfg, rank)
    ms.set_seed(cfg.seed)
    model = IPT(mcfg)
    if resume_from is not None:
        meta = load_checkpoint(model, resume_from, mcfg)
        saved_seed = _meta_number(meta, "seed")
        if saved_seed != cfg.seed:
            raise TrainError(f"{resume_from} was trained with seed {saved_seed}, the config has seed "
                             f"{cfg.seed}: resume with --seed {saved_seed}")
        if meta.get("train_mode") and str(meta["train_mode"]) != cfg.train_mode:
            raise TrainError(f"{resume_from} is a {meta['train_mode']} run, the config says {cfg.train_mode}")
        trainer = Trainer(mcfg, model, rank, world)
        trainer.optimizer.load_state(meta["optimizer"], str(resume_from))
        if trainer.ema is not None:
            try:
                trainer.ema.load_state(meta["ema"], str(resume_from))
            except ValueError as err:
                raise TrainError(str(err)) from None
        start = _meta_number(meta, "step")
        trainer.load_run_state(meta, start, str(resume_from))
        LOG.info("resuming from %s at step %d", resume_from, start)
        return mcfg, model, trainer, start, meta
    if cfg.pretrained:
        if cfg.train_mode == "finetune":
            load_pretrained_task(model, cfg.pretrained, mcfg)
        else:
            load_checkpoint(model, cfg.pretrained, mcfg)
    elif cfg.get("init_from"):
        load_warm_start(model, cfg.init_from, mcfg)
    elif cfg.train_mode == "finetune":
        LOG.warning("fine-tuning from random weights (no --pretrained or --init_from checkpoint given)")
    if cfg.train_mode == "finetune" and cfg.lr_schedule != "constant":
        LOG.info("lr_schedule %s; the paper fine-tunes with a constant 2e-5 (--lr_schedule constant)",
                 cfg.lr_schedule)
    return mcfg, model, Trainer(mcfg, model, rank, world), 0, {}
